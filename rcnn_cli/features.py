"""`rcnn extract-features`: the per-region feature cache of a split."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from rcnn_cli.console import RichProgress, out
from rcnn_cli.options import (
    DEFAULT_RUN,
    CachedMethod,
    CachedMethodOption,
    Classes,
    DataRoot,
    DatasetFormat,
    RunDir,
    SkipBad,
    Split,
    layout_name,
    parse_classes,
    stage_options,
)
from stages.methods import METHODS, get_cached_method


@stage_options(METHODS.command_options("extract-features"))
def extract_features(
    data: DataRoot,
    split: Split,
    method: CachedMethodOption = CachedMethod.rcnn,  # type: ignore[attr-defined]
    run: RunDir = DEFAULT_RUN,
    before_finetuning: Annotated[
        bool,
        typer.Option(
            "--before-finetuning",
            help="SPP-net: the pyramids alone, which fine-tuning reads (fc7 follows, after it).",
        ),
    ] = False,
    classes: Classes = None,
    layout: DatasetFormat = None,
    skip_bad: SkipBad = False,
    *,
    given: dict[str, Any],
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
    options = chosen.extract_options(given)
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
