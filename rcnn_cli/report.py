"""`rcnn report`: a run's results table and where its time went."""

from __future__ import annotations

from rich.table import Table

from rcnn_cli.console import out
from rcnn_cli.options import DEFAULT_RUN, RunDir
from stages.report import report as collect
from stages.runs import RunLayout


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def report(run: RunDir = DEFAULT_RUN) -> None:
    """Print each method's mAP (with and without box regression), test seconds an image and training
    seconds, and the time of every stage.

    Reads only what the stages recorded (eval JSON files and manifests); runs nothing. Test time excludes
    proposals; training time counts each method's own stages (not the shared proposals and pre-training).

    Example: rcnn report --run runs/demo
    """
    found = collect(RunLayout(run))
    results = Table(title=f"results: {run}")
    columns = ("method", "split", "metric", "mAP", "mAP without box regression", "test s/image", "training s")
    for column in columns:
        results.add_column(column, justify="left" if column in ("method", "split", "metric") else "right")
    for r in found.results:
        results.add_row(
            r.label,
            r.split,
            r.metric,
            _score(r.map),
            _score(r.map_without_box_regression),
            _number(r.test_seconds_per_image, 3),
            _number(r.training_seconds, 0),
        )
    if not found.results:
        results.add_row("(no evaluations yet: rcnn evaluate --run ... --method ...)", "", "", "", "", "", "")
    out.print(results)
    stages = Table(title="time of each stage")
    stages.add_column("stage")
    stages.add_column("artifact")
    stages.add_column("seconds", justify="right")
    for s in found.stages:
        stages.add_row(s.stage, s.artifact, f"{s.seconds:.1f}")
    stages.add_row("[bold]total[/]", "", f"[bold]{found.total_seconds:.1f}[/]")
    out.print(stages)
