"""The `rcnn` command: sub-commands for every stage, one error edge, `--version` and `--debug`."""

from __future__ import annotations

import errno
import functools
import importlib
import inspect
import os
import sys
import traceback
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, NoReturn

import typer
from rich.markup import escape
from typer.core import TyperGroup

from rcnn_cli.console import err, setup_logging
from stages.core.errors import UserError

EXIT_INTERNAL, EXIT_USER = 1, 2


class _ErrorEdge(TyperGroup):
    """Turns a UserError into one line and exit 2, anything unexpected into one line and exit 1;
    ``--debug`` shows the traceback instead."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except typer.BadParameter as exc:  # Typer words a bad choice as pydantic's "Value error, 'x' is ..."
            exc.message = exc.message.removeprefix("Value error, ")
            raise
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except BrokenPipeError:  # the reader went away (`rcnn --help | head`): nothing left to say
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(EXIT_INTERNAL) from None
        except KeyboardInterrupt:
            err.print("[red]interrupted[/]: finished work is kept; rerun the command to resume")
            raise typer.Exit(130) from None
        except UserError as exc:
            self._user_error(ctx, str(exc))
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):  # stages name the file they write
                self._internal_error(ctx, exc)  # (stages.core.atomic.writing); this is the net under them
            self._user_error(
                ctx, f"{exc.filename or 'writing'}: no space left on the device; finished work is kept"
            )
        except Exception as exc:  # the edge: every other failure is ours, not the user's
            self._internal_error(ctx, exc)

    @staticmethod
    def _user_error(ctx, message: str) -> NoReturn:
        if ctx.params.get("debug"):
            traceback.print_exc()
        err.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)
        raise typer.Exit(EXIT_USER) from None

    @staticmethod
    def _internal_error(ctx, exc: Exception) -> NoReturn:
        if ctx.params.get("debug"):
            traceback.print_exc()
        err.print(
            f"[red]internal error:[/] {type(exc).__name__}: {escape(str(exc))} "
            "(rerun with --debug for the traceback)",
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_INTERNAL) from None


COMMANDS = {
    "run": "rcnn_cli.run:run",
    "data": "rcnn_cli.data:app",
    "propose": "rcnn_cli.propose:propose",
    "pretrain": "rcnn_cli.train:pretrain",
    "finetune": "rcnn_cli.train:finetune",
    "compress": "rcnn_cli.train:compress",
    "extract-features": "rcnn_cli.features:extract_features",
    "train-svm": "rcnn_cli.classifiers:train_svm",
    "train-bbox": "rcnn_cli.classifiers:train_bbox",
    "detect": "rcnn_cli.detect:detect",
    "evaluate": "rcnn_cli.evaluate:evaluate",
    "export": "rcnn_cli.export:export",
    "report": "rcnn_cli.report:report",
    "study": "rcnn_cli.study:study",
    "bench": "rcnn_cli.bench:app",
}
"""The sub-commands in the order ``rcnn --help`` lists them: a command function, or a group's Typer app."""


class _Commands(Mapping[str, Any]):
    """``COMMANDS`` by name, each module imported and its click command built when first looked up."""

    def __getitem__(self, name: str) -> Any:
        if name not in COMMANDS:
            raise KeyError(name)
        return _built(name)

    def __iter__(self) -> Iterator[str]:
        return iter(COMMANDS)

    def __len__(self) -> int:
        return len(COMMANDS)


@functools.cache
def _built(name: str) -> Any:
    module, _, attribute = COMMANDS[name].partition(":")
    found = getattr(importlib.import_module(module), attribute)
    if not isinstance(found, typer.Typer):
        single = typer.Typer(add_completion=False)
        single.command(name)(found)
        found = single
    _reflow_every_help(found)
    command = typer.main.get_command(found)
    command.name = name
    return command


class _LazyGroup(_ErrorEdge):
    """The root group: a sub-command is built (its module imported, its options made) only when it is
    looked up, so that ``rcnn finetune --help`` builds ``finetune`` alone and every command starts at
    once."""

    def __init__(self, **settings: Any):
        super().__init__(**settings)
        self.commands = _Commands()  # type: ignore[assignment]


app = typer.Typer(
    cls=_LazyGroup,
    name="rcnn",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def reflowed(doc: str) -> str:
    """A docstring as help that wraps at any terminal width: each paragraph's lines joined into one, and
    indented paragraphs (examples) kept line for line."""
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(
        text if text.startswith(" ") else " ".join(line.strip() for line in text.splitlines())
        for text in paragraphs
    )


def _reflow_every_help(group: typer.Typer) -> None:
    for command in group.registered_commands:
        if command.help is None and command.callback is not None and command.callback.__doc__:
            command.help = reflowed(command.callback.__doc__)
    for subgroup in group.registered_groups:
        if subgroup.typer_instance is not None:
            _reflow_every_help(subgroup.typer_instance)


def _version(value: bool) -> None:
    if value:
        from importlib import metadata  # 0.1 s of imports, asked for by --version only

        typer.echo(f"rcnn {metadata.version('rcnn-toolkit')}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show Python tracebacks on errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """R-CNN -> SPP-net -> Fast R-CNN -> Faster R-CNN on your data: propose, train, detect, evaluate.

    Example: rcnn data demo --out data/demo && rcnn propose --data data/demo --split test
    """
    setup_logging(debug)


def main() -> None:
    """Console-script entry point."""
    app()
