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
    from stages.evaluation.diagnosis import Diagnosis
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
    diagnose: Annotated[
        bool,
        typer.Option(
            "--diagnose",
            help="Also diagnose the errors: the top-ranked false positives by type (Loc, Sim, Oth, BG), "
            "the PR breakdown (C75 ... FN) and AP by object size, as JSON and a plot beside the results.",
        ),
    ] = False,
    similar: Annotated[
        list[str] | None,
        typer.Option(
            "--similar",
            help="With --diagnose: a group of similar classes, comma-separated (repeatable; default: "
            "Hoiem's groups for VOC, the supercategories for COCO, else none).",
        ),
    ] = None,
) -> None:
    """Score detections with the VOC protocol (IoU >= 0.5, difficult ignored): AP per class, mAP.

    With --run and --method, first detects on the split (rcnn, spp: from its feature cache; fast: the
    network on every image) and writes RUN/<method>/detections/SPLIT.json and RUN/<method>/eval/SPLIT.json
    (with the mAP without box regression and the test seconds an image) and the PR curves; --compressed
    writes SPLIT.svd.json beside them.

    --diagnose adds the analysis of Hoiem et al. (ECCV 2012) that the R-CNN paper used: each class's
    top-ranked false positives (its first detections, as many as its objects) typed as poor localization
    or duplicate (Loc), a similar class (Sim), another class (Oth) or background (BG); how AP grows as each
    kind of error is removed (COCO's analyze: C75, C50, Loc, Sim, Oth, BG, FN); AP by object size. With
    --run it diagnoses the detections with box regression and without, into RUN/<method>/eval/
    SPLIT.diagnosis.json and .png.

    Examples:

      rcnn evaluate --data data/demo --split test --run runs/demo --method fast

      rcnn evaluate --data data/demo --split test --run runs/demo --method rcnn

      rcnn evaluate --data data/demo --split test --detections dets.json --out results.json

      rcnn evaluate --data data/demo --split test --run runs/demo --method fast --diagnose
    """
    from stages.datasets.formats import load_dataset
    from stages.evaluation.metrics import save_evaluation
    from stages.inference.evaluate import evaluate_file, evaluate_run
    from stages.runs.layout import RunLayout

    if similar and not diagnose:
        raise typer.BadParameter("--similar groups are for --diagnose", param_hint="--similar")
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
            diagnose=diagnose,
            similar=_groups(similar),
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
        if result.diagnosis is not None and result.diagnosis_path is not None:
            print_diagnosis(result.diagnosis, result.diagnosis_path, result.diagnosis_without_box_regression)
    elif detections is not None and run is None:
        dataset = load_dataset(data, split, parse_classes(classes), format=layout_name(layout))
        scored = evaluate_file(
            dataset, detections, metric, out=out_file, plot=plot, diagnose=diagnose, similar=_groups(similar)
        )
        print_results(scored.evaluation, f"{split}: {detections}", scored.intervals)
        out.print(f"PR curves: {scored.plot_path}")
        if scored.diagnosis is not None and scored.diagnosis_path is not None:
            print_diagnosis(scored.diagnosis, scored.diagnosis_path)
    else:
        raise typer.BadParameter("give either --detections FILE, or --run RUN with --method")


def _groups(similar: list[str] | None) -> list[tuple[str, ...]] | None:
    """``--similar a,b --similar c,d`` -> [("a", "b"), ("c", "d")]; None when not given."""
    if not similar:
        return None
    return [names for group in similar if (names := parse_classes(group, "--similar")) is not None]


def print_diagnosis(diagnosis: Diagnosis, written: Path, without: Diagnosis | None = None) -> None:
    """The diagnosis as tables: the top-ranked false positives by type (and without box regression),
    each class's, the PR breakdown and AP by object size; then where it was ``written``."""
    from stages.evaluation.diagnosis import ABBREVIATIONS, LEVELS, SIZES, SOURCES, TRUNCATION, TYPES

    types = Table(title="top-ranked false positives (each class's first detections, as many as its objects)")
    types.add_column("detections")
    for kind in TYPES:
        types.add_column(ABBREVIATIONS[kind], justify="right")
    for label, found in (("as scored", diagnosis), ("without box regression", without)):
        if found is not None:
            counts = found.false_positives
            total = sum(counts.values())
            types.add_row(label, *(f"{counts[k]} ({counts[k] / total:.0%})" if total else "0" for k in TYPES))
    out.print(types)
    by_class = Table(title="each class's top-ranked false positives")
    for column in ("class", "objects", *(ABBREVIATIONS[kind] for kind in TYPES)):
        by_class.add_column(column, justify="left" if column == "class" else "right")
    for one in diagnosis.classes:
        counts = one.false_positives()
        not_trained = " [dim](not trained)[/]" if one.name in diagnosis.untrained else ""
        by_class.add_row(escape(one.name) + not_trained, str(one.objects), *(str(counts[k]) for k in TYPES))
    out.print(by_class)
    levels = Table(title=f"PR breakdown: mean AP ({diagnosis.metric}) as each kind of error is removed")
    for level in LEVELS:
        levels.add_column(ABBREVIATIONS[level], justify="right")
    levels.add_row(*(_ap(diagnosis.breakdown[level]) for level in LEVELS))
    out.print(levels)
    sizes = Table(title="AP by object size (COCO's: small < 32², large > 96² pixels), truncation, difficulty")
    for size in SIZES:
        sizes.add_column(f"{size} ({diagnosis.objects_by_size[size]})", justify="right")
    extra = []
    if (truncation := diagnosis.ap_by_truncation) is not None:
        objects = diagnosis.objects_by_truncation or {}
        for kind in TRUNCATION:
            sizes.add_column(f"{kind.replace('_', ' ')} ({objects.get(kind, 0)})", justify="right")
            extra.append(_ap(truncation[kind]))
    if diagnosis.difficult_counted is not None:
        sizes.add_column("difficult counted", justify="right")
        extra.append(_ap(diagnosis.difficult_counted))
    sizes.add_row(*(_ap(diagnosis.ap_by_size[size]) for size in SIZES), *extra)
    out.print(sizes)
    out.print(f"similar classes: {escape(SOURCES[diagnosis.similar.source])}", soft_wrap=True)
    out.print(f"diagnosis: {written}; its plot: {written.with_suffix('.png')}")


def _ap(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"


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
