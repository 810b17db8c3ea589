"""The ``rcnn`` console script's entry point, kept free of the library's imports.

Processes that ``multiprocessing`` spawns (``rcnn propose``'s selective-search workers) run the console
script again before their task; importing the command line here would load torch in every one of them.
"""


def main() -> None:
    """Run the command line."""
    from rcnn_cli.app import main as run

    run()
