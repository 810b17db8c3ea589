"""`rcnn report`: each run's results table and where its time went, and the HTML page of them all."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from rcnn_cli.console import compact_table, out
from rcnn_cli.options import DEFAULT_RUN

if TYPE_CHECKING:
    from stages.report.summary import MethodResult, ProposerRecall, RunReport, SeedSpread


def score_text(value: float | None) -> str:
    """An mAP to three decimals; a dash when unknown."""
    return "-" if value is None else f"{value:.3f}"


def _number(value: float | None, digits: int) -> str:
    """A time to ``digits`` decimals; a dash when unknown."""
    return "-" if value is None else f"{value:.{digits}f}"


def report(
    run: Annotated[
        list[Path] | None,
        typer.Option(
            "--run", help="Run folder (default: runs/default); repeat it to compare runs side by side."
        ),
    ] = None,
    html: Annotated[
        Path | None,
        typer.Option(
            "--html", help="Where to write the HTML page (default: RUN/report.html of the first --run)."
        ),
    ] = None,
) -> None:
    """Print each method's mAP (with and without box regression), test seconds an image and training
    seconds, each proposer's recall, and the time of every stage; write all of it, with per-class AP, PR
    curves, recall against IoU, training curves, accuracy against test time and the detection grid, to
    one self-contained HTML page.

    Reads only what the stages recorded (eval JSON files, detections, logs and manifests); runs nothing.
    Test time is given without proposals and with them (a method whose network proposes makes them in
    its test pass; the others add the seconds an image of their propose stage); training time counts
    each method's own stages (not the shared proposals and pre-training). The paper's figures appear
    beside the measured ones when the run's config.toml (written by `rcnn run`) has them. The page opens
    offline in any browser.

    Examples:

      rcnn report --run runs/demo

      rcnn report --run runs/a --run runs/b --html compare.html
    """
    from stages.report.page import write_report_page
    from stages.report.summary import report as collect
    from stages.runs.layout import RunLayout

    layouts = [RunLayout(folder) for folder in run or [DEFAULT_RUN]]
    for layout, found in [(layout, collect(layout)) for layout in layouts]:
        print_report(found, str(layout))
    page = write_report_page(layouts, html or layouts[0].report_page)
    out.print(f"page: {escape(str(page))}")


def print_report(found: RunReport, title: str) -> None:
    """The terminal tables of one run: its results, its proposals and their recall, and the time of each
    stage. The split and metric are columns only where the evaluations differ in them."""
    from stages.proposals.propose import LOW_RECALL, LOW_RECALL_DOCS

    rows = found.results
    shared = {name: {getattr(r, name) for r in rows} for name in ("split", "metric")}
    said = ", ".join(f"{name} {next(iter(values))}" for name, values in shared.items() if len(values) == 1)
    results = compact_table(f"results: {escape(title)}" + (f" ({said})" if rows and said else ""))
    results.add_column("method", no_wrap=True)
    varying = [name for name, values in shared.items() if len(values) > 1]
    for name in varying:
        results.add_column(name)
    spreads = {(s.method, s.variant, s.split): s for s in found.seeds}
    if found.seeds:
        results.caption = "±: the mAP's standard deviation over the run's seeds (below)"
    for column in ("mAP", "95%\ninterval", "without\nbox reg.", "test\ns/image", "with\nproposals"):
        results.add_column(column, justify="right")
    results.add_column("training\ns", justify="right")
    for r in rows:
        results.add_row(
            r.label,
            *(getattr(r, name) for name in varying),
            score_text(r.map) + _spread(spreads.get((r.method, r.variant, r.split))),
            "" if r.map_ci95 is None else f"{r.map_ci95[0]:.2f}-{r.map_ci95[1]:.2f}",
            score_text(r.map_without_box_regression),
            _number(r.test_seconds_per_image, 3),
            _number(r.test_seconds_with_proposals, 3),
            _number(r.training_seconds, 0),
        )
    if not rows:
        results.add_row("(no evaluations yet: rcnn evaluate --run ... --method ...)", *[""] * 6)
    out.print(results)
    if found.seeds:
        print_seed_differences(found)
    if found.stale_replicas:
        out.print(
            f"[yellow]left out of the seeds, made with another config than the run's: "
            f"{escape(', '.join(found.stale_replicas))} (rcnn run CONFIG --seeds N makes them again)[/]"
        )
    if any(r.diagnosis for r in rows):
        print_errors(rows)
    if found.proposals:
        proposals = compact_table("proposals")
        proposals.add_column("split")
        proposals.add_column("made by", no_wrap=True)
        for column in ("images", "boxes/\nimage", "recall\nIoU 0.5", "recall\nIoU 0.7"):
            proposals.add_column(column, justify="right")
        for p in found.proposals:
            recall = p.recall or {}
            style = "yellow" if p.low_recall else None
            proposals.add_row(
                p.split,
                p.source,
                str(p.images),
                f"{p.boxes_per_image:.0f}",
                *(score_text(recall.get(t)) for t in ("0.5", "0.7")),
                style=style,
            )
        out.print(proposals)
        if any(p.low_recall for p in found.proposals):
            out.print(
                f"[yellow]proposals that find fewer than {LOW_RECALL:.0%} of the objects limit every "
                f"detector: {escape(LOW_RECALL_DOCS)}[/]"
            )
    if found.recall:
        print_recall(found.recall)
    stages = compact_table("time of each stage")
    stages.add_column("stage")
    stages.add_column("artifact")
    stages.add_column("seconds", justify="right")
    for s in found.stages:
        stages.add_row(s.stage, s.artifact, f"{s.seconds:.1f}")
    stages.add_row("[bold]total[/]", "", f"[bold]{found.total_seconds:.1f}[/]")
    out.print(stages)


def _spread(spread: SeedSpread | None) -> str:
    """The standard deviation of the mAP over the run's seeds, on a line of its own under it, as COCO
    prints figures below 1 (±.014); nothing with fewer than two seeds."""
    if spread is None or len(spread.maps) < 2:
        return ""
    return "\n" + std_text(spread.std)


def std_text(std: float) -> str:
    """A standard deviation of an mAP as COCO prints figures below 1: ±.014."""
    return "±" + f"{std:.3f}".removeprefix("0")


def print_seed_differences(found: RunReport) -> None:
    """Each evaluation's mAP with every seed, their mean and standard deviation; then each pair of
    methods compared over the seeds: the difference of their means, the t-test's p, and whether it exceeds the
    training noise."""
    from stages.report.summary import NOISE_LEVEL, seed_differences

    points = compact_table(f"mAP of each seed (the replicas in RUN/seeds/: {found.replica_seconds:.0f} s)")
    points.add_column("method", no_wrap=True)
    offsets = sorted({offset for s in found.seeds for offset, _ in s.maps})
    for column in (*(f"seed\n+{offset}" for offset in offsets), "mean", "std"):
        points.add_column(column, justify="right")
    for spread in found.seeds:
        value = dict(spread.maps)
        std = "-" if len(spread.maps) < 2 else f"{spread.std:.3f}"
        points.add_row(spread.label, *(score_text(value.get(k)) for k in offsets), f"{spread.mean:.3f}", std)
    out.print(points)
    table = compact_table(f"differences over the seeds (beyond the noise: t-test, p < {NOISE_LEVEL})")
    for column in ("first", "second"):
        table.add_column(column, no_wrap=True)
    for column in ("diff.", "p"):
        table.add_column(column, justify="right")
    table.add_column("test")
    table.add_column("", no_wrap=True)
    for d in seed_differences(found.seeds):
        said = "[bold]beyond the noise[/]" if d.beyond_noise else "[dim]within[/]"
        test = "paired" if d.paired else "Welch"
        table.add_row(d.first.label, d.second.label, f"{d.difference:+.3f}", f"{d.p_value:.3f}", test, said)
    out.print(table)


def print_errors(results: Sequence[MethodResult]) -> None:
    """Each diagnosed evaluation's top-ranked false positives by type (shares; Loc without box regression
    beside), and its PR breakdown's mean APs at C75, C50, Loc, BG (``rcnn evaluate --diagnose``)."""
    table = compact_table("errors: top-ranked false positives by type; AP as errors are removed")
    table.add_column("method", no_wrap=True)
    for column in ("Loc", "Sim", "Oth", "BG", "Loc w/o\nbox reg.", "AP\nC75", "AP\nC50", "AP\nLoc", "AP\nBG"):
        table.add_column(column, justify="right")
    for r in results:
        if (found := r.diagnosis) is None:
            continue
        shares = found.shares
        without = found.loc_share_without_box_regression
        loc_without = "-" if without is None else f"{without:.0%}"
        table.add_row(
            r.label,
            *(f"{shares[kind]:.0%}" for kind in ("loc", "sim", "oth", "bg")),
            loc_without,
            *(score_text(found.breakdown.get(level)) for level in ("c75", "c50", "loc", "bg")),
        )
    out.print(table)


def print_recall(proposers: Sequence[ProposerRecall]) -> None:
    """Each proposer's recall: at IoU 0.5 with its 300 best proposals an image, and averaged over IoU 0.5
    to 0.95 (AR) with its 300, 1,000 and 2,000 best (Faster R-CNN's figure 2, in numbers)."""
    from stages.proposals.recall import PROPOSAL_COUNTS

    table = compact_table("proposal recall (R: at IoU 0.5; AR: averaged over IoU 0.5 to 0.95)")
    table.add_column("proposer", no_wrap=True)
    table.add_column("split")
    for column in ("boxes/\nimage", "R\n300", *(f"AR\n{count}" for count in PROPOSAL_COUNTS)):
        table.add_column(column, justify="right")
    for p in proposers:
        curves = p.curves
        table.add_row(
            escape(p.label),
            escape(p.split),
            f"{curves.boxes_per_image:.0f}",
            score_text(curves.at(0.5, "300")),
            *(score_text(curves.average(str(count))) for count in PROPOSAL_COUNTS),
        )
    out.print(table)
