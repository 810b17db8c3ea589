"""`rcnn extract-features`: the per-region feature cache of a split."""

from __future__ import annotations

from typing import Annotated

import typer

from rcnn_cli.console import RichProgress, out
from rcnn_cli.options import (
    DEFAULT_PRECISION,
    DEFAULT_RUN,
    CachedMethod,
    CachedMethodOption,
    Classes,
    DataRoot,
    DatasetFormat,
    Device,
    Precision,
    RunDir,
    SkipBad,
    Split,
    Workers,
    given,
    layout_name,
    parse_classes,
    parse_sizes,
)
from stages.cache.options import CacheOptions
from stages.methods import get_cached_method
from stages.methods.rcnn.options import ExtractOptions
from stages.methods.spp.options import SppExtractOptions


def extract_features(
    data: DataRoot,
    split: Split,
    method: CachedMethodOption = CachedMethod.rcnn,  # type: ignore[attr-defined]
    run: RunDir = DEFAULT_RUN,
    dtype: Annotated[str, typer.Option(help="Stored precision: float16 or float32.")] = CacheOptions.dtype,
    compression: Annotated[
        str,
        typer.Option(help="Column compression: lzf (fast), gzip (smallest: caches of tens of GB) or none."),
    ] = CacheOptions.compression,
    batch_size: Annotated[
        int | None, typer.Option(help=f"R-CNN: regions a forward pass (default {ExtractOptions.batch_size}).")
    ] = None,
    scales: Annotated[
        str | None,
        typer.Option(
            help="SPP-net: shorter-side scales, comma-separated (default "
            f"{','.join(map(str, SppExtractOptions.scales))}; the paper's five: 480,576,688,864,1200)."
        ),
    ] = None,
    window_size: Annotated[
        int | None,
        typer.Option(
            help="SPP-net: pool each window at the scale where it is closest to this size "
            f"(default {SppExtractOptions.window_size} px)."
        ),
    ] = None,
    backbone: Annotated[str | None, typer.Option(help="SPP-net before fine-tuning: the backbone.")] = None,
    weights: Annotated[
        str | None,
        typer.Option(help="SPP-net before fine-tuning: RUN/backbone.pt (default), imagenet, a file."),
    ] = None,
    before_finetuning: Annotated[
        bool,
        typer.Option(
            "--before-finetuning",
            help="SPP-net: the pyramids alone, which fine-tuning reads (fc7 follows, after it).",
        ),
    ] = False,
    workers: Workers = CacheOptions.workers,
    device: Device = CacheOptions.device,
    precision: Precision = DEFAULT_PRECISION,
    classes: Classes = None,
    layout: DatasetFormat = None,
    skip_bad: SkipBad = False,
) -> None:
    """Cache the features of every proposal and ground-truth box of a split to RUN/METHOD/features/SPLIT.h5.

    R-CNN: each region warped (context 16 px at 227) through the fine-tuned network; fc7 (for the SVMs)
    and pool5 (for box regression). SPP-net: conv5 once an image a scale, each region pooled by the
    {1, 2, 3, 6} pyramid at the scale where it is closest to 224 x 224 px, in two passes: with
    --before-finetuning the pyramids alone (which `rcnn finetune --method spp` reads), then, after it, the
    pyramids and fc7 (for the SVMs).
    With overlaps and labels. Written image by image; an interrupted run continues where it stopped.

    Examples:

      rcnn extract-features --method rcnn --data data/demo --split trainval --run runs/demo

      rcnn extract-features --method spp --data data/demo --split trainval --before-finetuning

      rcnn extract-features --method spp --data data/demo --split test --scales 480,576,688,864,1200
    """
    from stages.datasets.formats import load_dataset
    from stages.runs.layout import RunLayout

    chosen = get_cached_method(method.value)
    options = chosen.extract_options(
        given(
            dtype=dtype,
            compression=compression,
            batch_size=batch_size,
            scales=None if scales is None else parse_sizes(scales, "--scales"),
            window_size=window_size,
            backbone=backbone,
            weights=weights,
            workers=workers,
            device=device,
            precision=precision.value,
        )
    )
    dataset = load_dataset(data, split, parse_classes(classes), skip_bad, RichProgress(), layout_name(layout))
    summary = chosen.extract_features(
        dataset, RunLayout(run), options, progress=RichProgress(), before_finetuning=before_finetuning
    )
    rate = (
        f"{summary.images_per_second:.2f} images/s"
        if summary.computed
        else f"added to the cached pyramids in {summary.seconds:.1f} s"
    )
    out.print(
        f"{summary.path}: {summary.images} images, {summary.rows} regions, "
        f"{summary.bytes / 2**20:.1f} MiB; {rate}"
    )
