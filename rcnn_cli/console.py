"""Terminal output: one rich console for logs and progress (stderr), one for tables (stdout).

Under ``torchrun`` only rank 0 prints tables: the other processes' ``out`` is quiet (each process's
warnings and errors still reach stderr).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from collections.abc import Iterator
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress import Progress as RichBar
from rich.table import Table
from rich.text import Text

from stages.core.progress import Advance, Progress

err = Console(stderr=True, highlight=False)
out = Console(highlight=False, quiet=os.environ.get("RANK", "0").strip() not in ("", "0"))


def compact_table(title: str, caption: str | None = None) -> Table:
    """A table without column rules or edges, so that many columns fit a terminal's 80 characters."""
    return Table(title=title, caption=caption, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)


def _rate(task: Task) -> float | None:
    """Items a second since the task started, those done before it (a resumed run's) left out. Not
    rich's own speed, taken over the last seconds: items that finish in bursts (a pool's) inflate it."""
    made = task.completed - task.fields["done_before"]
    elapsed = task.finished_time if task.finished else task.elapsed
    return made / elapsed if made > 0 and elapsed else None


class _RateColumn(ProgressColumn):
    """Items a second with the task's unit, or seconds an item when slower than one a second."""

    def render(self, task: Task) -> Text:
        rate, unit = _rate(task), task.fields["unit"]
        if rate is None:
            return Text("")
        return Text(f"{rate:.2f} {unit}/s" if rate >= 1 else f"{1 / rate:.1f} s/{unit}", style="cyan")


class _RemainingColumn(ProgressColumn):
    """The time left at the task's rate so far (``_rate``)."""

    def render(self, task: Task) -> Text:
        rate = _rate(task)
        if task.total is None or rate is None:
            return Text("-:--:--", style="progress.remaining")
        left = max(0.0, task.total - task.completed) / rate
        return Text(str(datetime.timedelta(seconds=round(left))), style="progress.remaining")


class RichProgress(Progress):
    """Progress bars with count, rate, elapsed time and ETA, and live fields such as the loss."""

    @contextlib.contextmanager
    def task(self, description: str, total: int | None, unit: str = "it", done: int = 0) -> Iterator[Advance]:
        bar = RichBar(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            _RateColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            _RemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=err,
        )
        with bar:
            task_id = bar.add_task(
                description, total=total, completed=done, unit=unit, info="", done_before=done
            )

            def advance(n: int = 1, **fields: Any) -> None:
                info = "  ".join(
                    f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items()
                )
                if fields:
                    bar.update(task_id, advance=n, info=info)
                else:
                    bar.update(task_id, advance=n)

            yield advance


class _ConsoleHandler(logging.Handler):
    """Log records as single lines on the stderr console, warnings marked."""

    def emit(self, record: logging.LogRecord) -> None:
        message = escape(record.getMessage())
        if record.levelno >= logging.WARNING:
            err.print(f"[yellow]warning:[/] {message}", soft_wrap=True)
        else:
            err.print(message, soft_wrap=True)


def setup_logging(debug: bool) -> None:
    """Send the library's ``rcnn`` logger to the console (once)."""
    logger = logging.getLogger("rcnn")
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    if not any(isinstance(h, _ConsoleHandler) for h in logger.handlers):
        logger.addHandler(_ConsoleHandler())
    logger.propagate = False
