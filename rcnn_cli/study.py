"""`rcnn study`: a paper's ablation table on the user's data: every variant of a base config run, what
two variants would make alike made once, and one comparison beside the paper's figures."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from rcnn_cli.console import RichProgress, compact_table, out
from rcnn_cli.report import score_text, std_text
from rcnn_cli.run import done, print_plan

if TYPE_CHECKING:
    from stages.study.summary import StudyReport


def study(
    path: Annotated[Path, typer.Argument(help="The study's TOML file (see configs/studies/).")],
    data: Annotated[
        Path | None, typer.Option("--data", help="Dataset root (overrides the base config's \\[data] root).")
    ] = None,
    run_folder: Annotated[
        Path | None,
        typer.Option(
            "--run",
            help="The study's folder, each variant a run folder in it (default: runs/studies/NAME).",
        ),
    ] = None,
    settings: Annotated[
        list[str] | None,
        typer.Option("--set", help="table.key=value, TOML syntax (repeatable), for every variant."),
    ] = None,
    seeds: Annotated[
        int,
        typer.Option(
            "--seeds",
            help="Train and test every variant this many times (each seed + 0, 1, ...): the "
            "ordering is then tested against the training's noise.",
        ),
    ] = 1,
    restart: Annotated[
        bool, typer.Option("--restart", help="Start interrupted stages over instead of resuming them.")
    ] = False,
    plan_only: Annotated[bool, typer.Option("--plan", help="Print every variant's plan and stop.")] = False,
) -> None:
    """Run every variant of a study, as `rcnn run` runs a config, and compare them beside the paper.

    A study (configs/studies/) names a base config, its variants (each a label and `table.key=value`
    overrides) and the paper's mAP for each row. Each variant runs in DIR/<name>/; a step that an earlier
    variant made with the same options, on the same inputs, is taken from it (hard links) instead of made
    again: the proposals, the backbone, a fine-tuned network, a feature cache. Up to date and resumable as
    `rcnn run`: rerun it after a change and only what changed runs. Prints the comparison (mAP, its
    interval, the seeds' spread, the paper's figure, test and training time), one line saying whether the
    paper's ordering held and whether beyond the noise, and writes DIR/study.html.

    Examples:

      rcnn study configs/studies/fast_svd.toml --data data/demo

      rcnn study configs/studies/fast_layers.toml --data data/demo --seeds 3

      rcnn study configs/studies/spp_pyramid.toml --data data/demo --plan

      rcnn study configs/studies/voc07/fast_layers.toml --data data/VOCdevkit/VOC2007
    """
    from stages.study.config import load_study
    from stages.study.run import default_folder, plan_study, run_study, variant_runs

    started = time.perf_counter()
    chosen = load_study(path)
    folder = run_folder or default_folder(path)
    runs = variant_runs(chosen, folder, None if data is None else str(data), settings or [])
    if plan_only:
        for config, planned in plan_study(runs, folder, seeds, restart):
            print_plan(planned, config.run.layout)
        return
    outcome = run_study(
        chosen,
        runs,
        folder,
        seeds=seeds,
        restart=restart,
        progress=RichProgress(),
        show_plan=print_plan,
        on_step=done,
    )
    if outcome.report is None:
        return
    print_study(outcome.report)
    said = f"{outcome.made} stages run, {outcome.taken} taken from another run"
    out.print(f"{said}; page: {outcome.page}; {time.perf_counter() - started:.1f} s", soft_wrap=True)


def print_study(found: StudyReport) -> None:
    """The comparison as a table that fits 80 columns (test seconds an image, training seconds; the
    interval over the test images, the mean and standard deviation over the seeds), then the verdict on the
    paper's ordering and the seconds behind the rows."""
    seeds = any(row.spread is not None for row in found.rows)
    table = compact_table(escape(found.study.title), escape(found.study.source) or None)
    for name in ("variant", "mAP", "95% CI", *(["seeds"] if seeds else []), "paper", "test s", "train s"):
        table.add_column(name, justify="left" if name == "variant" else "right", no_wrap=name != "variant")
    for row in found.rows:
        result, spread = row.result, row.spread
        cells = [
            escape(row.variant.label),
            score_text(row.map),
            "-" if row.ci95 is None else f"{row.ci95[0]:.2f}-{row.ci95[1]:.2f}",
        ]
        if seeds:  # the mean and the standard deviation over the seeds: 0.844±.012
            cells.append("-" if spread is None else f"{spread.mean:.3f}{std_text(spread.std)}")
        test = None if result is None else result.test_seconds_per_image
        training = None if result is None else result.training_seconds
        cells += [
            score_text(row.variant.paper),
            "-" if test is None else f"{test:.3f}",
            "-" if training is None else f"{training:.0f}",
        ]
        table.add_row(*cells)
    out.print(table)
    out.print(escape(found.verdict), soft_wrap=True)
    out.print(
        f"The stages behind the rows took {found.seconds_once:.0f} s, each file made once "
        f"({found.seconds_alone:.0f} s had each variant run alone).",
        soft_wrap=True,
    )
