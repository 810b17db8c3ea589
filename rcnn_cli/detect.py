"""`rcnn detect`: detections on any images, drawn and written as JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from rcnn_cli.console import RichProgress, out
from rcnn_cli.options import DEFAULT_RUN, Device, Method, MethodOption, RunDir


def detect(
    images: Annotated[list[Path], typer.Argument(help="Image files (JPEG, PNG; any size, gray or colour).")],
    run: RunDir = DEFAULT_RUN,
    method: MethodOption = Method.rcnn,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Output folder (default: RUN/<method>/detect).")
    ] = None,
    score_thresh: Annotated[
        float, typer.Option(help="Keep detections scoring at least this (SVM margin for rcnn).")
    ] = 0.0,
    device: Device = "auto",
) -> None:
    """Detect objects: selective search, features, scores, box regression, per-class NMS (0.3).

    Writes OUT/<stem>.png (boxes, class names, scores drawn) and OUT/<stem>.json (the detections format)
    for each image, and prints what it found.

    Example: rcnn detect data/demo/JPEGImages/000003.jpg --run runs/demo --method rcnn --out detections/
    """
    from stages.detect import DetectOptions, detect_images

    results = detect_images(
        images,
        run,
        method.value,
        out_dir,
        DetectOptions(score_thresh=score_thresh),
        device=device,
        progress=RichProgress(),
    )
    for result in results:
        found = result.detections
        table = Table(
            title=f"{result.path}: {len(found)} detections from {result.proposals} proposals "
            f"in {result.seconds:.2f} s -> {result.picture}"
        )
        for column in ("class", "score", "x1", "y1", "x2", "y2"):
            table.add_column(column, justify="left" if column == "class" else "right")
        for label, score, box in zip(found.labels, found.scores, found.boxes, strict=True):
            table.add_row(result.classes[int(label) - 1], f"{score:.3f}", *(f"{v:.1f}" for v in box))
        out.print(table)
