"""Options shared by several commands, declared once."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

RunDir = Annotated[Path, typer.Option("--run", help="Run folder: every stage's artifacts live here.")]
DataRoot = Annotated[Path, typer.Option("--data", help="Dataset root in VOC layout.")]
Split = Annotated[str, typer.Option("--split", help="Split name: ROOT/ImageSets/Main/<split>.txt.")]
Classes = Annotated[
    str | None,
    typer.Option(
        "--classes",
        help="Comma-separated class names (default: VOC's 20 for a VOC year "
        "folder, else every name in the annotations, sorted).",
    ),
]
SkipBad = Annotated[
    bool, typer.Option("--skip-bad", help="Skip unreadable images and annotations (counted, listed).")
]
DEFAULT_RUN = Path("runs/default")


def parse_classes(classes: str | None) -> tuple[str, ...] | None:
    """``"a, b"`` -> ``("a", "b")``; None stays None."""
    if classes is None:
        return None
    names = tuple(n.strip() for n in classes.split(",") if n.strip())
    if not names or len(set(names)) != len(names):
        raise typer.BadParameter("give distinct, comma-separated names", param_hint="--classes")
    return names


def parse_sizes(text: str, option: str) -> tuple[int, ...]:
    """``"480, 576"`` -> ``(480, 576)``; anything but positive integers is a usage error for ``option``."""
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise typer.BadParameter(f"{text!r}: give comma-separated positive integers", param_hint=option)
    return sizes


class Method(str, Enum):
    """The detectors of the lineage."""

    rcnn = "rcnn"
    spp = "spp"
    fast = "fast"


class CachedMethod(str, Enum):
    """The detectors with a feature cache, SVMs and separate box regressors."""

    rcnn = "rcnn"
    spp = "spp"


MethodOption = Annotated[Method, typer.Option("--method", help="Which detector's stage to run.")]
CachedMethodOption = Annotated[
    CachedMethod, typer.Option("--method", help="Which detector's stage to run (Fast R-CNN has no cache).")
]
Device = Annotated[str, typer.Option(help="auto (CUDA when present, else CPU), cpu, cuda, cuda:1, ...")]
Workers = Annotated[int, typer.Option(help="DataLoader worker processes (0: load in this process).")]
Resume = Annotated[
    bool,
    typer.Option(
        "--resume/--restart",
        help="Continue the checkpoint of an interrupted run (the default), or start over.",
    ),
]
Seed = Annotated[int, typer.Option(help="Seed of sampling and initialisation.")]
