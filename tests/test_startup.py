"""The command line starts at once: `rcnn --help` and every `rcnn <command> --help` load neither torch,
torchvision, OpenCV nor h5py (the library's heavy imports happen inside the commands that run a stage).
How long the help takes is measured by `rcnn bench startup`, not here."""

import json
import subprocess
import sys

HEAVY = ("torch", "torchvision", "cv2", "h5py", "matplotlib", "sklearn", "scipy", "pycocotools")

_HELP_OF_EVERY_COMMAND = """
import json, sys
import typer
from typer.testing import CliRunner
from rcnn_cli.app import app

def commands(group, path):
    yield path
    for name, command in getattr(group, "commands", {}).items():
        yield from commands(command, [*path, name])

runner = CliRunner()
helped = []
for path in commands(typer.main.get_command(app), []):
    result = runner.invoke(app, [*path, "--help"], terminal_width=60)
    assert result.exit_code == 0, (path, result.output)
    helped.append(" ".join(path))
print(json.dumps({"helped": helped, "loaded": [name for name in HEAVY if name in sys.modules]}))
"""


def test_the_help_of_every_command_loads_no_heavy_library():
    code = f"HEAVY = {HEAVY!r}\n{_HELP_OF_EVERY_COMMAND}"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.splitlines()[-1])
    assert {"", "run", "finetune", "extract-features", "bench methods", "data demo"} <= set(found["helped"])
    assert found["loaded"] == []


def test_the_check_would_see_a_heavy_import():
    """The check itself: running a stage's command does load torch, and is seen to."""
    code = "import sys\nfrom stages.methods import METHODS\nMETHODS['fast']\nprint('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "True", done.stderr
