"""`rcnn detect`: detections on any images, drawn and written as JSON."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from rcnn_cli.console import RichProgress, out
from rcnn_cli.options import (
    DEFAULT_DEVICE,
    DEFAULT_PRECISION,
    DEFAULT_RUN,
    Compressed,
    Device,
    MethodName,
    MethodOption,
    Precision,
    RunDir,
    SkipBad,
    given,
)
from stages.methods import get_method


def detect(
    images: Annotated[
        list[str],
        typer.Argument(help="Image files (JPEG, PNG; any size, gray or colour), folders and glob patterns."),
    ],
    run: RunDir = DEFAULT_RUN,
    method: MethodOption = MethodName.fast,  # type: ignore[attr-defined]
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Output folder (default: RUN/<method>/detect).")
    ] = None,
    score_thresh: Annotated[
        float | None,
        typer.Option(help="Keep detections scoring at least this (default: probability 0.5; SVM margin 0)."),
    ] = None,
    compressed: Compressed = False,
    grid: Annotated[
        Path | None, typer.Option(help="Also save the annotated images side by side in one PNG.")
    ] = None,
    device: Device = DEFAULT_DEVICE,
    precision: Precision = DEFAULT_PRECISION,
    skip_bad: SkipBad = False,
    save_json: Annotated[
        Path | None, typer.Option(help="Also write every image's detections in one exchange-format file.")
    ] = None,
    recursive: Annotated[
        bool, typer.Option("--recursive", "-r", help="Also detect on the images in folders' subfolders.")
    ] = False,
    workers: Annotated[int, typer.Option(min=0, help="Selective-search processes (0: one a core).")] = 0,
    mode: Annotated[
        str | None,
        typer.Option(help="Selective search: single, fast or quality (default: as the run's proposals)."),
    ] = None,
) -> None:
    """Detect objects: proposals, then the detector, per-class NMS (0.3).

    Fast R-CNN (the default): one forward pass, softmax scores and class-specific boxes, at most 100
    detections an image. R-CNN and SPP-net: features, SVM scores, box regression, NMS again. Faster
    R-CNN: its region proposal network makes the proposals in the same forward pass (300 an image), no
    selective search, on images of any size. Writes OUT/<stem>.png (boxes, class names, scores drawn)
    and OUT/<stem>.json (the detections format) for each image, and prints what it found. Selective
    search runs in worker processes ahead of the network (--workers; default one a core), with the
    settings the run's proposals were made with.

    Examples:

      rcnn detect data/demo/JPEGImages/000003.jpg --run runs/demo --out detections/

      rcnn detect data/demo/JPEGImages/00000[3-6].jpg --run runs/demo --compressed --grid grid.png

      rcnn detect photos/ --recursive --run runs/demo --save-json photos.json

      rcnn detect 'photos/**/*.jpg' --run runs/demo --skip-bad

      rcnn detect photos/ --method faster --run runs/demo
    """
    from stages.inference.detect import detect_images
    from stages.proposals.propose import searched_with
    from stages.proposals.sources import SelectiveSearch
    from stages.runs.layout import RunLayout

    layout = RunLayout(run)
    chosen = get_method(method.value)
    results = detect_images(
        images,
        layout,
        chosen,
        out_dir,
        score_thresh,
        device=device,
        variant=chosen.variant(compressed),
        precision=precision.value,
        skip_bad=skip_bad,
        save_json=save_json,
        grid=grid,
        recursive=recursive,
        proposer=chosen.proposer(layout)
        or SelectiveSearch(replace(searched_with(layout), workers=workers, **given(mode=mode))),
        progress=RichProgress(),
    )
    if grid is not None:
        out.print(f"grid of {len(results)} images: {grid}")
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
