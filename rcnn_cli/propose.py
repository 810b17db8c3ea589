"""`rcnn propose`: selective-search proposals for a split, or imported precomputed ones."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from rcnn_cli.console import RichProgress, out
from rcnn_cli.options import (
    DEFAULT_RUN,
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
from stages.proposals.options import ProposalOptions


@stage_options(ProposalOptions)
def propose(
    data: DataRoot,
    split: Split,
    run: RunDir = DEFAULT_RUN,
    mat_file: Annotated[
        Path | None, typer.Option("--import", help="Import a Fast R-CNN release .mat file instead.")
    ] = None,
    classes: Classes = None,
    layout: DatasetFormat = None,
    skip_bad: SkipBad = False,
    *,
    given: dict[str, Any],
) -> None:
    """Propose object boxes with selective search; writes RUN/proposals/<split>.h5.

    Resumable: rerun after an interruption and only the missing images are searched.

    Examples:

      rcnn propose --data data/demo --split trainval --run runs/demo

      rcnn propose --data VOC2007 --split test --import selective_search_data/voc_2007_test.mat
    """
    from stages.datasets.formats import load_dataset
    from stages.proposals.sources import ImportedBoxes, SelectiveSearch
    from stages.runs.layout import RunLayout

    options = ProposalOptions(**given)
    dataset = load_dataset(data, split, parse_classes(classes), skip_bad=skip_bad, format=layout_name(layout))
    proposer = SelectiveSearch(options) if mat_file is None else ImportedBoxes(mat_file, options)
    summary = proposer.propose_split(dataset, RunLayout(run), skip_bad=skip_bad, progress=RichProgress())
    table = Table(title=f"proposals: {summary.path}")
    for column in ("images", "searched", "boxes/image", "recall@0.5", "recall@0.7", "images/s"):
        table.add_column(column, justify="right")
    recall = summary.recall or {}
    table.add_row(
        str(summary.images),
        str(summary.computed),
        f"{summary.boxes_per_image:.0f}",
        *(f"{recall[t]:.3f}" if t in recall else "-" for t in ("0.5", "0.7")),
        f"{summary.images_per_second:.3g}" if summary.computed else "-",  # 0.00423, not 0.00
    )
    out.print(table)
