"""`rcnn propose`: a split's proposals by selective search or a trained network, or imported ones."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from rcnn_cli.console import RichProgress, out
from rcnn_cli.options import (
    DEFAULT_DEVICE,
    DEFAULT_RUN,
    Classes,
    DataRoot,
    DatasetFormat,
    Device,
    RunDir,
    SkipBad,
    Split,
    layout_name,
    parse_classes,
    stage_options,
)
from stages.methods import METHODS, get_method
from stages.proposals.options import ProposalOptions

if TYPE_CHECKING:
    from stages.proposals.sources import Proposer

SELECTIVE_SEARCH = "selective-search"
ProposerName = Enum(  # type: ignore[misc]
    "ProposerName",
    {name.replace("-", "_"): name for name in (SELECTIVE_SEARCH, *METHODS.proposers())},
    type=str,
)
"""Selective search, or the trained networks that propose (``stages.methods.METHODS.proposers``)."""


@stage_options(ProposalOptions)
def propose(
    data: DataRoot,
    split: Split,
    run: RunDir = DEFAULT_RUN,
    mat_file: Annotated[
        Path | None, typer.Option("--import", help="Import a Fast R-CNN release .mat file instead.")
    ] = None,
    proposer: Annotated[
        ProposerName,
        typer.Option(
            help="Where the boxes come from: selective search, or a trained network (with --model)."
        ),
    ] = ProposerName.selective_search,  # type: ignore[attr-defined]
    model: Annotated[
        Path | None,
        typer.Option(
            help="The trained network that proposes: RUN/faster/finetune/model.pt for --proposer rpn."
        ),
    ] = None,
    device: Device = DEFAULT_DEVICE,
    classes: Classes = None,
    layout: DatasetFormat = None,
    skip_bad: SkipBad = False,
    *,
    given: dict[str, Any],
) -> None:
    """Propose object boxes with selective search, or a trained region proposal network; writes
    RUN/proposals/<split>.h5.

    With --proposer rpn --model RUN/faster/finetune/model.pt, Faster R-CNN's RPN proposes (--max-boxes an
    image, at the test scale it was trained for), and R-CNN, SPP-net and Fast R-CNN train and test on its
    boxes (Faster R-CNN, section 4.1). Resumable: rerun after an interruption and only the missing images
    are searched.

    Examples:

      rcnn propose --data data/demo --split trainval --run runs/demo

      rcnn propose --data VOC2007 --split test --import selective_search_data/voc_2007_test.mat

      rcnn propose --data data/demo --split test --run runs/rpn --proposer rpn --model faster.pt
    """
    from stages.datasets.formats import load_dataset
    from stages.proposals.sources import ImportedBoxes, SelectiveSearch
    from stages.runs.layout import RunLayout

    options = ProposalOptions(**given)
    chosen = network_proposer(proposer.value, model, options.max_boxes, device)
    if chosen is not None and mat_file is not None:
        raise typer.BadParameter("imported boxes come from a file, not a network", param_hint="--import")
    dataset = load_dataset(data, split, parse_classes(classes), skip_bad=skip_bad, format=layout_name(layout))
    if chosen is not None:
        source = chosen
    else:
        source = SelectiveSearch(options) if mat_file is None else ImportedBoxes(mat_file, options)
    summary = source.propose_split(dataset, RunLayout(run), skip_bad=skip_bad, progress=RichProgress())
    table = Table(title=f"proposals: {summary.path}")
    for column in ("images", "made", "boxes/image", "recall@0.5", "recall@0.7", "images/s"):
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


def network_proposer(name: str, model: Path | None, boxes: int, device: str) -> Proposer | None:
    """The trained network ``--proposer`` names, from ``--model``; None for selective search."""
    if name == SELECTIVE_SEARCH:
        if model is not None:
            raise typer.BadParameter(
                "only a network's proposals need one (--proposer rpn)", param_hint="--model"
            )
        return None
    if model is None:
        raise typer.BadParameter(
            f"--proposer {name} proposes with the network it names", param_hint="--model"
        )
    return get_method(METHODS.proposers()[name]).model_proposer(model, boxes, device)
