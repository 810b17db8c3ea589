"""Options shared by several commands, declared once; the method choices come from the library's
registry, so a new method needs no change here."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from stages.datasets.options import FORMATS
from stages.methods import METHODS
from stages.networks.options import PRECISIONS
from stages.training.options import TrainingOptions

RunDir = Annotated[Path, typer.Option("--run", help="Run folder: every stage's artifacts live here.")]
DataRoot = Annotated[
    Path, typer.Option("--data", help="Dataset root: VOC, COCO or YOLO layout, found from its files.")
]
Split = Annotated[
    str,
    typer.Option(
        "--split",
        help="Split name: VOC's ImageSets/Main/<split>.txt, COCO's annotations/instances_<split>.json, "
        "YOLO's data.yaml entry (or images/<split>).",
    ),
]
Layout = Enum("Layout", {name: name for name in FORMATS}, type=str)  # type: ignore[misc]
DatasetFormat = Annotated[
    Layout | None,
    typer.Option(
        "--format", case_sensitive=False, help="Dataset layout (default: found from the root's files)."
    ),
]
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


def given(**values: Any) -> dict[str, Any]:
    """Only the options the user set, so the library's options keep their (the papers') defaults."""
    return {k: v for k, v in values.items() if v is not None}


MethodName = Enum("MethodName", {name: name for name in METHODS}, type=str)  # type: ignore[misc]
"""The detectors of the lineage (``stages.methods.METHODS``)."""
CachedMethod = Enum("CachedMethod", {n: n for n in METHODS.with_command("extract-features")}, type=str)  # type: ignore[misc]
"""The detectors with a feature cache, SVMs and separate box regressors."""
CompressibleMethod = Enum("CompressibleMethod", {n: n for n in METHODS.with_command("compress")}, type=str)  # type: ignore[misc]
"""The detectors with a truncated-SVD form (``rcnn compress``)."""

MethodOption = Annotated[MethodName, typer.Option("--method", help="Which detector's stage to run.")]
CachedMethodOption = Annotated[
    CachedMethod, typer.Option("--method", help="Which detector's stage to run (those with a feature cache).")
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
PrecisionName = Enum("PrecisionName", {name: name for name in PRECISIONS}, type=str)  # type: ignore[misc]
Precision = Annotated[
    PrecisionName,
    typer.Option(
        help="The network's arithmetic: fp32, bf16 (CPUs with AVX-512 BF16 or AMX, recent GPUs) or fp16 "
        "(CUDA; training scales the loss)."
    ),
]
DEFAULT_PRECISION = PrecisionName.fp32  # type: ignore[attr-defined]
DEFAULT_SEED, DEFAULT_DEVICE = TrainingOptions.seed, TrainingOptions.device


def layout_name(layout: Enum | None) -> str | None:
    """The ``--format`` given, as the library names it (None: found from the dataset's files)."""
    return None if layout is None else str(layout.value)
