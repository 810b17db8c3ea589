"""`rcnn train-svm` and `rcnn train-bbox`: the classifiers and regressors fitted on the feature cache."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from rcnn_cli.console import RichProgress, out
from rcnn_cli.options import DEFAULT_RUN, CachedMethod, CachedMethodOption, RunDir, stage_options
from stages.cache.options import BboxOptions, SvmOptions
from stages.methods import get_cached_method

CacheSplit = Annotated[str, typer.Option("--split", help="Split whose feature cache to train on.")]


@stage_options(SvmOptions)
def train_svm(
    method: CachedMethodOption = CachedMethod.rcnn,  # type: ignore[attr-defined]
    run: RunDir = DEFAULT_RUN,
    split: CacheSplit = "trainval",
    *,
    given: dict[str, Any],
) -> None:
    """Train one linear SVM a class on cached fc7 features, with hard negative mining.

    The R-CNN release's settings: features scaled to mean norm 20, C 0.001, bias multiplier 10, positives
    weighted 2, hard negatives score > -1, easy ones (< -1.2) evicted, retraining every 2000 new negatives.
    Writes RUN/METHOD/svm.npz.

    Example: rcnn train-svm --method rcnn --run runs/demo
    """
    from stages.cache.svm import train_svms
    from stages.runs.layout import RunLayout

    files = get_cached_method(method.value).files(RunLayout(run))
    options = SvmOptions(**given)
    summary = train_svms(files, split, options, progress=RichProgress())
    table = Table(title=f"SVMs: {summary.path} (feature scale {summary.feature_scale:.4g})")
    table.add_column("class")
    for column in ("positives", "cached negatives", "retrainings", "objective"):
        table.add_column(column, justify="right")
    for c in summary.classes:
        table.add_row(
            c.name, str(c.positives), str(c.cached_negatives), str(c.retrains), f"{c.objective:.5f}"
        )
    out.print(table)
    out.print(f"{summary.seconds:.1f} s, peak memory {summary.peak_rss_mb:.0f} MiB")


@stage_options(BboxOptions)
def train_bbox(
    method: CachedMethodOption = CachedMethod.rcnn,  # type: ignore[attr-defined]
    run: RunDir = DEFAULT_RUN,
    split: CacheSplit = "trainval",
    *,
    given: dict[str, Any],
) -> None:
    """Fit class-specific box regressors (ridge on the region features before fc6: R-CNN's pool5,
    SPP-net's pyramid; R-CNN appendix C); writes RUN/METHOD/bbox.npz.

    Example: rcnn train-bbox --method rcnn --run runs/demo
    """
    from stages.cache.box_regression import train_bbox as run_train_bbox
    from stages.runs.layout import RunLayout

    chosen = get_cached_method(method.value)
    summary = run_train_bbox(
        chosen.files(RunLayout(run)),
        chosen.region_feature,
        split,
        BboxOptions(**given),
        RichProgress(),
    )
    table = Table(title=f"box regressors: {summary.path}")
    table.add_column("class")
    table.add_column("training pairs", justify="right")
    table.add_column("mean |error| (train)", justify="right")
    for name, pairs in summary.pairs.items():
        error = summary.mean_abs_error.get(name)
        table.add_row(name, str(pairs), "-" if error is None else f"{error:.4f}")
    out.print(table)
