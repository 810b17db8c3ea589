"""What the report page shows of a run, read from its artifacts: its report, its config's paper figures,
each evaluation scored again from its detections for the PR curves, and the training logs."""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from stages.config.run_config import PaperFigures, RunConfig, load_config
from stages.core.errors import UserError
from stages.datasets.formats import load_dataset
from stages.datasets.records import Dataset
from stages.detections.files import read_detections
from stages.evaluation.metrics import Evaluation, evaluate
from stages.methods import METHODS
from stages.proposals.propose import proposals_dataset
from stages.report.charts import COLOURS, SHARED_COLOUR
from stages.report.summary import MethodResult, RunReport, report
from stages.runs.layout import RunLayout

log = logging.getLogger("rcnn")


@dataclass(frozen=True)
class _Evaluated:
    """One evaluation as the page shows it: the report's figures, the paper's (or None), and the PR curves
    scored again from the detections (None when they could not be)."""

    result: MethodResult
    paper: PaperFigures | None
    curves: Evaluation | None

    @property
    def colour(self) -> str:
        """The colour of its method (and compressed model) in every table and chart."""
        return COLOURS.get((self.result.method, self.result.variant), SHARED_COLOUR)


@dataclass(frozen=True)
class _Log:
    """One training log (``log.csv``): its method's name (None for pre-training), label and columns."""

    method: str | None
    label: str
    columns: dict[str, list[float]]

    @property
    def colour(self) -> str:
        """Its method's colour; grey for the shared pre-training."""
        return SHARED_COLOUR if self.method is None else COLOURS.get((self.method, ""), SHARED_COLOUR)


@dataclass(frozen=True)
class CollectedRun:
    """One run folder with everything the page shows of it; ``notes`` say what had to be left out."""

    layout: RunLayout
    report: RunReport
    evaluations: tuple[_Evaluated, ...]
    logs: tuple[_Log, ...]
    grids: tuple[tuple[str, Path], ...]
    notes: tuple[str, ...]

    @property
    def name(self) -> str:
        """The run folder as given, which tells runs apart in tables and legends."""
        return str(self.layout)


def collect_run(run: RunLayout) -> CollectedRun:
    """Everything the page shows of ``run``, read from its artifacts."""
    found = report(run)
    config = _config(run)
    evaluations, notes = _evaluations(run, found, config)
    grids = tuple(
        (method.label, grid)
        for method in METHODS.values()
        if (grid := method.files(run).detect / "grid.png").is_file()
    )
    return CollectedRun(run, found, evaluations, _training_logs(run), grids, notes)


def _config(run: RunLayout) -> RunConfig | None:
    """The run's ``config.toml`` (written by ``rcnn run``), or None when it has none or it does not load:
    the paper's figures are then left out, the rest of the page is the same."""
    path = run.config
    if not path.is_file():
        return None
    try:
        return load_config(path)
    except UserError as exc:
        log.warning("no paper figures for %s: %s", run, exc)
        return None


def _paper(config: RunConfig | None, result: MethodResult) -> PaperFigures | None:
    """The paper's figures for ``result``'s method (its compressed model's for a ``+ SVD`` evaluation)."""
    settings = None if config is None else config.methods.get(result.method)
    if settings is None:
        return None
    return settings.papers.get(result.variant)


def _evaluations(
    run: RunLayout, found: RunReport, config: RunConfig | None
) -> tuple[tuple[_Evaluated, ...], tuple[str, ...]]:
    """Each evaluation with its paper figures and PR curves; notes for the curves that had to be left out.
    Each split's dataset is read once."""
    splits: dict[str, Dataset | None] = {}
    evaluations, notes = [], []
    for result in found.results:
        if result.split not in splits:
            classes = tuple(name for name, _ in result.class_ap) or None
            try:
                splits[result.split] = _split(run, config, result.split, classes)
            except UserError as exc:
                splits[result.split] = None
                notes.append(f"{run}: PR curves of split {result.split!r} left out: {exc}")
        dataset, curves = splits[result.split], None
        if dataset is not None:
            try:
                curves = _score_again(run, result, dataset)
            except UserError as exc:
                notes.append(f"{run}: PR curves of {result.label} left out: {exc}")
        evaluations.append(_Evaluated(result, _paper(config, result), curves))
    return tuple(evaluations), tuple(notes)


def _split(run: RunLayout, config: RunConfig | None, split: str, classes: tuple[str, ...] | None) -> Dataset:
    """The annotated split the evaluations scored: the config's ``[data]`` when the run has one, else the
    dataset the split's proposals were made from. UserError when it cannot be read (moved, removed)."""
    if config is not None:
        data = config.data
        return load_dataset(Path(data.root), split, classes, data.skip_bad, format=data.format)
    root, layout = proposals_dataset(run.proposals(split))
    return load_dataset(root, split, classes, format=layout)


def _score_again(run: RunLayout, result: MethodResult, dataset: Dataset) -> Evaluation:
    """``result``'s evaluation again, from its detections file, for the PR curves the JSON does not keep."""
    files = METHODS[result.method].files(run)
    return evaluate(dataset, read_detections(files.detections(result.split, result.variant)), result.metric)


def _training_logs(run: RunLayout) -> tuple[_Log, ...]:
    """The pre-training log and each method's fine-tuning log, those that exist and can be read."""
    sources: list[tuple[str | None, str, Path]] = [(None, "pre-training", run.pretrain.log)]
    sources += [(name, method.label, method.files(run).finetune.log) for name, method in METHODS.items()]
    logs = []
    for method, label, path in sources:
        if path.is_file():
            columns = _read_log(path)
            if columns.get("iteration"):
                logs.append(_Log(method, label, columns))
    return tuple(logs)


def _read_log(path: Path) -> dict[str, list[float]]:
    """A ``log.csv`` as columns of floats (NaN where a value is missing); empty when unreadable."""

    def number(text: str | None) -> float:
        """A cell as a float; NaN for an empty or malformed one (a log cut short by a kill)."""
        try:
            return float(text) if text else math.nan
        except ValueError:
            return math.nan

    try:
        with path.open(newline="", encoding="utf-8") as file:
            rows = list(csv.DictReader(file))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        log.warning("%s: unreadable training log (%s)", path, exc)
        return {}
    names = list(rows[0]) if rows else []
    return {name: [number(row.get(name)) for row in rows] for name in names}
