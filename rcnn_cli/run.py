"""`rcnn run`: every stage a config file asks for, in one process, skipping what is up to date."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from rcnn_cli.console import RichProgress, err, out
from rcnn_cli.options import parse_classes
from rcnn_cli.report import print_report

if TYPE_CHECKING:
    from stages.pipeline.run import PlannedStep
    from stages.runs.layout import RunLayout

_STATE_STYLE = {"run": "bold", "resume": "yellow", "up to date": "dim", "share": "cyan"}
"""How the plan shows each step's state (``stages.pipeline.run.State``'s values)."""


def run(
    config: Annotated[Path, typer.Argument(help="The run's TOML config (see configs/).")],
    data: Annotated[
        Path | None, typer.Option("--data", help="Dataset root (overrides \\[data] root).")
    ] = None,
    run_folder: Annotated[
        Path | None, typer.Option("--run", help="Run folder (overrides \\[run] folder).")
    ] = None,
    classes: Annotated[
        str | None,
        typer.Option(
            "--classes",
            help="Comma-separated class names, the same for every split (overrides \\[data] classes).",
        ),
    ] = None,
    settings: Annotated[
        list[str] | None,
        typer.Option("--set", help="table.key=value, TOML syntax (repeatable): fast.finetune.iterations=500"),
    ] = None,
    restart: Annotated[
        bool, typer.Option("--restart", help="Start interrupted stages over instead of resuming them.")
    ] = False,
    plan_only: Annotated[bool, typer.Option("--plan", help="Print the plan and stop.")] = False,
    seeds: Annotated[
        int,
        typer.Option(
            "--seeds",
            help="Train and test every method this many times, each seed of the config + 0, 1, ...: the "
            "report gives each method's mean and spread, and which differences exceed it.",
        ),
    ] = 1,
) -> None:
    """Run every stage the config asks for, in dependency order, then print the results and write
    RUN/report.html.

    First prints the plan: each stage, and whether it will run, resume (interrupted earlier) or is up to
    date (its artifact's manifest records the same options and unchanged inputs), which skips it. A
    changed option reruns its stage and the stages that read from it. The resolved config is written to
    RUN/config.toml: `rcnn run RUN/config.toml` remakes the run. Options a config leaves out take the
    papers' settings. Under torchrun, put `--` before `run`; data-parallel stages use every process.

    With --seeds N the run is made, then N - 1 replicas in RUN/seeds/1/ ... with every training seed
    (pre-training's and each method's) + 1, ...; they share the run's proposals. The report adds each
    method's mean and standard deviation over the seeds, and for each pair of methods whether their
    difference exceeds the training noise. A run made before is seed + 0: it is reused.

    Examples:

      rcnn run configs/demo.toml

      rcnn run configs/demo.toml --set fast.finetune.iterations=500 --run runs/demo-500

      rcnn run configs/demo.toml --seeds 3

      rcnn run configs/voc07_fast_vgg16.toml --data ~/data/VOCdevkit/VOC2007 --run runs/voc07-fast

      torchrun --nproc_per_node=2 -m rcnn_cli -- run configs/demo.toml
    """
    from stages.config.run_config import load_config
    from stages.pipeline.run import plan, replicas, run_config
    from stages.report.summary import report as collect

    started = time.perf_counter()
    chosen = load_config(
        config,
        settings or [],
        data_root=None if data is None else str(data),
        run_folder=None if run_folder is None else str(run_folder),
        classes=parse_classes(classes),
    )
    if plan_only:
        for replica in replicas(chosen, seeds):
            print_plan(plan(replica, restart), replica.run.layout)
        return
    outcome = run_config(
        chosen, seeds=seeds, restart=restart, progress=RichProgress(), show_plan=print_plan, on_step=done
    )
    if outcome.rank != 0:
        return
    folder = chosen.run.layout
    print_report(collect(folder), str(folder))
    ran = f"{len(outcome.ran)} of {len(outcome.planned)} stages run"
    out.print(f"{ran}; report: {folder.report_page}; {time.perf_counter() - started:.1f} s")


def print_plan(planned: list[PlannedStep], run: RunLayout) -> None:
    """The plan of ``run`` as a table: each stage, its artifact, what will happen to it and why."""
    seed = f" (seed +{run.replica_offset})" if run.replica_offset else ""
    table = Table(title=f"plan: {escape(str(run))}{seed}")
    for column in ("stage", "artifact", "will", "because"):
        table.add_column(column, overflow="fold")  # paths whole, however narrow the terminal
    for item in planned:
        style = _STATE_STYLE[item.state.value]
        table.add_row(
            item.step.name,
            str(item.step.artifact),
            f"[{style}]{item.state.value}[/]",
            item.reason,
            style=None,
        )
    out.print(table)


def done(item: PlannedStep, seconds: float, summary: str) -> None:
    """Say that a step is done, in how long, and what it found."""
    said = f": {escape(summary)}" if summary else ""
    err.print(f"[green]done[/] {item.step.name} ({seconds:.1f} s){said}", soft_wrap=True)
