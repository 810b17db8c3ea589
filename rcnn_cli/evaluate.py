"""`rcnn evaluate`: the VOC protocol, on a detections file or on a method's detections of a split."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from rcnn_cli.console import RichProgress, out
from rcnn_cli.options import (
    DEFAULT_DEVICE,
    DEFAULT_PRECISION,
    Classes,
    Compressed,
    DataRoot,
    DatasetFormat,
    Device,
    MethodName,
    Precision,
    SkipBad,
    Split,
    layout_name,
    parse_classes,
)
from stages.methods import get_method

if TYPE_CHECKING:
    from stages.evaluation.bootstrap import Intervals
    from stages.evaluation.metrics import Evaluation


def evaluate(
    data: DataRoot,
    split: Split,
    detections: Annotated[
        Path | None, typer.Option(help="Detections JSON (the exchange format) to score.")
    ] = None,
    run: Annotated[
        Path | None, typer.Option(help="Run folder: detect on the split with --method, then score.")
    ] = None,
    method: Annotated[MethodName | None, typer.Option(help="With --run: which detector.")] = None,
    metric: Annotated[
        str | None,
        typer.Option(
            help="voc07: 11-point AP (VOC2007 test); voc10: area under the curve; coco: AP at IoU "
            "0.50:0.95 and its companions, by pycocotools (default: coco for COCO datasets, else voc07)."
        ),
    ] = None,
    out_file: Annotated[Path | None, typer.Option("--out", help="Write results as JSON.")] = None,
    plot: Annotated[
        Path | None, typer.Option(help="PR curves PNG (default: beside --out or the detections).")
    ] = None,
    compressed: Compressed = False,
    device: Device = DEFAULT_DEVICE,
    precision: Precision = DEFAULT_PRECISION,
    classes: Classes = None,
    layout: DatasetFormat = None,
    skip_bad: SkipBad = False,
) -> None:
    """Score detections with the VOC protocol (IoU >= 0.5, difficult ignored): AP per class, mAP.

    With --run and --method, first detects on the split (rcnn, spp: from its feature cache; fast: the
    network on every image) and writes RUN/<method>/detections/SPLIT.json and RUN/<method>/eval/SPLIT.json
    (with the mAP without box regression and the test seconds an image) and the PR curves; --compressed
    writes SPLIT.svd.json beside them.

    Examples:

      rcnn evaluate --data data/demo --split test --run runs/demo --method fast

      rcnn evaluate --data data/demo --split test --run runs/demo --method rcnn

      rcnn evaluate --data data/demo --split test --detections dets.json --out results.json
    """
    from stages.datasets.formats import load_dataset
    from stages.detections.files import read_detections
    from stages.evaluation.bootstrap import bootstrap_intervals
    from stages.evaluation.metrics import evaluate as run_evaluation
    from stages.evaluation.metrics import save_evaluation
    from stages.inference.evaluate import evaluate_run
    from stages.runs.layout import RunLayout

    if run is not None and method is not None and detections is None:
        dataset = load_dataset(
            data, split, parse_classes(classes), skip_bad, RichProgress(), layout_name(layout)
        )
        chosen = get_method(method.value)
        result = evaluate_run(
            dataset,
            RunLayout(run),
            chosen,
            metric,
            variant=chosen.variant(compressed),
            device=device,
            precision=precision.value,
            progress=RichProgress(),
        )
        label = chosen.row_label(chosen.variant(compressed))
        print_results(result.evaluation, f"{label} on {split}: {result.detections_path}", result.intervals)
        out.print(f"test time: {result.seconds_per_image:.3f} s an image")
        if result.without_box_regression is not None:
            out.print(f"mAP without box regression: {result.without_box_regression.map:.3f}")
        if (curves := result.proposal_recall) is not None:
            out.print(
                f"its proposals find {curves.at(0.5, '300'):.3f} of the objects at IoU 0.5 with 300 an image "
                f"(average recall, IoU 0.5 to 0.95: {curves.average('300'):.3f})"
            )
        extra = result.intervals.to_json() if result.intervals else {}
        save_evaluation(result.evaluation, out_file, None, extra)
        out.print(f"results: {result.results_path}; PR curves: {result.plot_path}")
    elif detections is not None and run is None:
        dataset = load_dataset(data, split, parse_classes(classes), format=layout_name(layout))
        results = run_evaluation(dataset, read_detections(detections), metric)
        intervals = bootstrap_intervals(results)
        plot = plot or (out_file or detections).with_suffix(".pr.png")
        save_evaluation(results, out_file, plot, intervals.to_json() if intervals else {})
        print_results(results, f"{split}: {detections}", intervals)
        out.print(f"PR curves: {plot}")
    else:
        raise typer.BadParameter("give either --detections FILE, or --run RUN with --method")


def print_results(results: Evaluation, title: str, intervals: Intervals | None = None) -> None:
    """Per-class AP table with the mAP as its last row; with ``intervals``, a column of their 95%
    intervals over the test images."""
    table = Table(title=title)
    table.add_column("class")
    for column in ("AP", *(["95% interval"] if intervals else []), "positives", "detections"):
        table.add_column(column, justify="right")
    untrained = set(results.untrained)

    def spread(found: tuple[float, float] | None) -> tuple[str, ...]:
        if intervals is None:
            return ()
        return ("-" if found is None else f"{found[0]:.3f}-{found[1]:.3f}",)

    for c in results.classes:
        name = escape(c.name) + (" [dim](not trained)[/]" if c.name in untrained else "")
        ap = "-" if math.isnan(c.ap) else f"{c.ap:.3f}"
        found = intervals.ap.get(c.name) if intervals else None
        table.add_row(name, ap, *spread(found), str(c.positives), str(c.detections))
    mean = intervals.map if intervals else None
    table.add_row(f"[bold]mAP ({results.metric})[/]", f"[bold]{results.map:.3f}[/]", *spread(mean), "", "")
    out.print(table)
    if intervals:
        out.print(
            f"95% intervals: bootstrap over the split's images ({intervals.samples} draws, seed "
            f"{intervals.seed}); a retrained detector moves as well",
            soft_wrap=True,
        )
    if untrained:
        out.print(
            f"not in the mAP: {escape(', '.join(results.untrained))}, with no object in the training split",
            soft_wrap=True,
        )
    if results.summary is not None:
        summary = Table(title="COCO metric (pycocotools)")
        for key in results.summary:
            summary.add_column(key, justify="right")
        summary.add_row(*("-" if math.isnan(v) else f"{v:.3f}" for v in results.summary.values()))
        out.print(summary)
