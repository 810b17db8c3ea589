"""`rcnn evaluate`: the VOC protocol on a detections file."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from rcnn_cli.console import out
from rcnn_cli.options import Classes, DataRoot, Split, parse_classes


def evaluate(
    data: DataRoot,
    split: Split,
    detections: Annotated[Path, typer.Option(help="Detections JSON (the exchange format).")],
    metric: Annotated[
        str, typer.Option(help="voc07: 11-point AP (VOC2007 test); voc10: area under the curve.")
    ] = "voc07",
    out_file: Annotated[Path | None, typer.Option("--out", help="Write results as JSON.")] = None,
    plot: Annotated[
        Path | None, typer.Option(help="PR curves PNG (default: beside --out or the detections).")
    ] = None,
    classes: Classes = None,
) -> None:
    """Score detections with the VOC protocol (IoU >= 0.5, difficult ignored): AP per class, mAP.

    Example: rcnn evaluate --data data/demo --split test --detections dets.json --out results.json
    """
    from stages.detections import read_detections
    from stages.evaluation import evaluate as run_evaluation
    from stages.evaluation import save_evaluation
    from stages.voc import load_dataset

    dataset = load_dataset(data, split, parse_classes(classes))
    results = run_evaluation(dataset, read_detections(detections), metric)
    plot = plot or (out_file or detections).with_suffix(".pr.png")
    save_evaluation(results, out_file, plot)
    print_results(results, f"{split}: {detections}")
    out.print(f"PR curves: {plot}")


def print_results(results, title: str) -> None:
    """Per-class AP table with the mAP as its last row."""
    table = Table(title=title)
    table.add_column("class")
    for column in ("AP", "positives", "detections"):
        table.add_column(column, justify="right")
    for c in results.classes:
        table.add_row(c.name, "-" if math.isnan(c.ap) else f"{c.ap:.3f}", str(c.positives), str(c.detections))
    table.add_row(f"[bold]mAP ({results.metric})[/]", f"[bold]{results.map:.3f}[/]", "", "")
    out.print(table)
