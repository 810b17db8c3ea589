"""`rcnn bench startup`: how long the command line takes to answer `--help`, each command in a fresh
process (what a user waits for), with the library's heavy imports checked absent."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from stages.core.errors import UserError
from stages.core.progress import SILENT, Progress


@dataclass(frozen=True)
class StartupRow:
    """``rcnn COMMAND --help``'s wall seconds: the median and the best of the repeats."""

    command: str
    median: float
    best: float


def bench_startup(
    commands: Sequence[Sequence[str]], repeats: int = 5, progress: Progress = SILENT
) -> list[StartupRow]:
    """Each of ``commands`` (``[]`` is ``rcnn`` itself) with ``--help``, ``repeats`` times, each run a
    fresh ``python -m rcnn_cli`` process as the console script starts one."""
    rows = []
    with progress.task("rcnn ... --help", len(commands) * repeats, "run") as advance:
        for command in commands:
            seconds = []
            for _ in range(repeats):
                started = time.perf_counter()
                done = subprocess.run(
                    [sys.executable, "-m", "rcnn_cli", *command, "--help"], capture_output=True, text=True
                )
                seconds.append(time.perf_counter() - started)
                if done.returncode != 0:
                    raise UserError(f"rcnn {' '.join(command)} --help failed: {done.stderr.strip()[-200:]}")
                advance()
            rows.append(StartupRow(" ".join(command), statistics.median(seconds), min(seconds)))
    return rows
