"""`rcnn extract-features`: the per-region feature cache of a split."""

from __future__ import annotations

from typing import Annotated

import typer

from rcnn_cli.console import RichProgress, out
from rcnn_cli.options import (
    DEFAULT_RUN,
    Classes,
    DataRoot,
    Device,
    Method,
    MethodOption,
    RunDir,
    Split,
    Workers,
    parse_classes,
)


def extract_features(
    data: DataRoot,
    split: Split,
    method: MethodOption = Method.rcnn,
    run: RunDir = DEFAULT_RUN,
    dtype: Annotated[str, typer.Option(help="Stored precision: float16 or float32.")] = "float16",
    batch_size: Annotated[int, typer.Option(help="Regions a forward pass.")] = 256,
    workers: Workers = 0,
    device: Device = "auto",
    classes: Classes = None,
) -> None:
    """Cache the features of every proposal and ground-truth box of a split to RUN/rcnn/features/SPLIT.h5.

    R-CNN: each region warped (context 16 px at 227) through the fine-tuned network; fc7 (for the SVMs)
    and pool5 (for box regression), with overlaps and labels. Written image by image; an interrupted run
    continues where it stopped.

    Example: rcnn extract-features --method rcnn --data data/demo --split trainval --run runs/demo
    """
    from stages.rcnn import ExtractOptions
    from stages.rcnn import extract_features as run_extract
    from stages.voc import load_dataset

    options = ExtractOptions(dtype=dtype, batch_size=batch_size, workers=workers, device=device)
    dataset = load_dataset(data, split, parse_classes(classes))
    summary = run_extract(dataset, run, options, progress=RichProgress())
    out.print(
        f"{summary.path}: {summary.images} images, {summary.rows} regions, "
        f"{summary.bytes / 2**20:.1f} MiB; {summary.images_per_second:.2f} images/s"
    )
