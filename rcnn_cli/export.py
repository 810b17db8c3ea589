"""`rcnn export`: a method's detections as COCO or VOC result files."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from rcnn_cli.console import out
from rcnn_cli.options import DEFAULT_RUN, Compressed, MethodName, MethodOption, RunDir, Split
from stages.inference.options import EXPORT_FORMATS
from stages.methods import get_method

ResultFormat = Enum("ResultFormat", {name: name for name in EXPORT_FORMATS}, type=str)  # type: ignore[misc]


def export(
    split: Split,
    to: Annotated[
        ResultFormat,
        typer.Option(
            "--format", case_sensitive=False, help="coco: one results JSON; voc: the devkit's files."
        ),
    ],
    out_path: Annotated[
        Path, typer.Option("--out", help="The JSON file (coco) or the folder (voc) to write.")
    ],
    run: RunDir = DEFAULT_RUN,
    method: MethodOption = MethodName.fast,  # type: ignore[attr-defined]
    data: Annotated[
        Path | None, typer.Option(help="Dataset root (default: the one the detections were made on).")
    ] = None,
    compressed: Compressed = False,
) -> None:
    """Write a method's detections of a split (from `rcnn evaluate --run`) as result files: a COCO results
    JSON (`COCO.loadRes` reads it; the dataset's image and category ids) or the VOC devkit's
    comp4_det_<split>_<class>.txt files (1-based pixels).

    Examples:

      rcnn export --run runs/demo --method fast --split test --format coco --out fast-test.json

      rcnn export --run runs/demo --method rcnn --split test --format voc --out results/
    """
    from stages.inference.export import export as export_detections
    from stages.runs.layout import RunLayout

    chosen = get_method(method.value)
    done = export_detections(
        RunLayout(run), chosen, split, to.value, out_path, data=data, variant=chosen.variant(compressed)
    )
    where = done.paths[0] if to.value == "coco" else out_path
    out.print(f"{where}: {done.detections} detections of {split} as {to.value} ({len(done.paths)} files)")
