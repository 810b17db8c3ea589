"""A study's comparison: each variant's measured mAP (its interval, its seeds' spread), test and training
time, beside the paper's figure for the row; and whether the paper's ordering held on this data.

The ordering is tested step by step: the measured rows that record a paper figure, grouped by it, each
row of a group against each of the next lower group (tied figures claim no order). A step holds when
the row the paper puts higher measures higher here. Whether it is beyond the noise: over the training
seeds where both rows have at least two (``rcnn study --seeds``; the t-test of
``stages.report.summary.seed_differences``, paired when the seeds agree), else over the test images (the
paired bootstrap of ``stages.evaluation.bootstrap.paired_difference``), which does not see the
training's noise.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from stages.config.run_config import DataSettings, RunConfig
from stages.core.errors import UserError
from stages.datasets.formats import load_dataset
from stages.datasets.records import Dataset
from stages.detections.files import read_detections
from stages.evaluation.bootstrap import paired_difference
from stages.evaluation.metrics import Evaluation, evaluate
from stages.methods import METHODS
from stages.report.summary import (
    NOISE_LEVEL,
    MethodResult,
    SeedSpread,
    current_replicas,
    report,
    seed_differences,
)
from stages.runs.layout import RunLayout
from stages.study.config import Measure, Study, StudyVariant


@dataclass(frozen=True)
class StudyRow:
    """A variant as measured: its evaluation (``None`` until its run has made it), the mAP the row reads
    with its 95% interval over the test images, and the mAPs of its seeds (seed offset, mAP) where it
    has replicas."""

    variant: StudyVariant
    run: RunLayout
    result: MethodResult | None
    seeds: tuple[tuple[int, float], ...] = ()

    @property
    def map(self) -> float | None:
        return None if self.result is None else _value(self.result, self.variant.measure)

    @property
    def ci95(self) -> tuple[float, float] | None:
        """The interval over the test images: the evaluation's, for the mAP with box regression."""
        return self.result.map_ci95 if self.result and self.variant.measure.box_regression else None

    @property
    def spread(self) -> SeedSpread | None:
        """The row's mAP over its seeds, where it has two or more."""
        if len(self.seeds) < 2:
            return None
        measure = self.variant.measure
        return SeedSpread(self.variant.label, measure.method, measure.variant, "", self.seeds)


@dataclass(frozen=True)
class OrderingStep:
    """Two rows the paper orders, ``higher`` above ``lower``: the difference measured here (means over
    the seeds where both have them), its p and what noise the test saw; ``p_value`` None where no test
    applies (an mAP without box regression has no detections file to draw the test images from)."""

    higher: StudyRow
    lower: StudyRow
    difference: float
    p_value: float | None
    noise: str

    @property
    def held(self) -> bool:
        return self.difference > 0

    @property
    def beyond_noise(self) -> bool:
        return self.p_value is not None and self.p_value < NOISE_LEVEL


@dataclass(frozen=True)
class StudyReport:
    """A study's rows, the steps of the paper's ordering, and the seconds of the stages behind the rows:
    ``seconds_alone`` each variant's own (what running the variants one by one would take),
    ``seconds_once`` each file made once, however many variants share it."""

    study: Study
    rows: tuple[StudyRow, ...]
    steps: tuple[OrderingStep, ...]
    seconds_alone: float = 0.0
    seconds_once: float = 0.0

    @property
    def verdict(self) -> str:
        """One line: whether the paper's ordering held on this data, and whether beyond the noise."""
        with_paper = [row for row in self.rows if row.variant.paper is not None]
        if len({row.variant.paper for row in with_paper}) < 2:
            return "The study records fewer than two distinct paper figures: no ordering to test."
        if not self.steps:
            measured = sum(row.map is not None for row in with_paper)
            return f"Not measured yet: {measured} of the {len(with_paper)} rows with a paper figure."
        chain = _chain(self.steps)
        if not all(step.held for step in self.steps):
            said = "; ".join(_reversal(s) for s in self.steps if not s.held)
            return f"The paper's ordering ({chain}) did not hold: {said}{self._noise()}."
        tested = [s for s in self.steps if s.p_value is not None]
        beyond = [s for s in tested if s.beyond_noise]
        if not tested:
            noise = "untested against the noise"
        elif len(beyond) == len(self.steps):
            noise = "every step beyond the noise"
        elif not beyond:
            noise = "no step beyond the noise"
        else:
            noise = "beyond the noise: " + ", ".join(_pair(s) for s in beyond) + "; not the rest"
        return f"The paper's ordering held ({chain}), {noise}{self._noise()}."

    def _noise(self) -> str:
        """`` (the tests)``: what noise the ordering's steps were tested against; nothing if none was."""
        tested = dict.fromkeys(step.noise for step in self.steps if step.p_value is not None)
        return f" ({'; '.join(tested)})" if tested else ""


def _chain(steps: Sequence[OrderingStep]) -> str:
    """The paper's ordering of the rows the steps compare: ``a > b = c > d``."""
    levels: dict[float, list[str]] = {}
    for step in steps:
        for row in (step.higher, step.lower):
            names = levels.setdefault(row.variant.paper or 0.0, [])
            if row.variant.label not in names:
                names.append(row.variant.label)
    return " > ".join(" = ".join(levels[paper]) for paper in sorted(levels, reverse=True))


def _pair(step: OrderingStep) -> str:
    return f"{step.higher.variant.label} > {step.lower.variant.label}"


def _reversal(step: OrderingStep) -> str:
    """A step that did not hold: the rows tied, or the lower one above by how much, and the test's say."""
    lower, higher = step.lower.variant.label, step.higher.variant.label
    if step.difference == 0:
        return f"{lower} = {higher}"
    if step.p_value is None:
        noise = "untested"
    else:
        noise = f"{'beyond' if step.beyond_noise else 'within'} the noise, p {step.p_value:.2f}"
    return f"{lower} > {higher} by {-step.difference:.3f} ({noise})"


def study_report(study: Study, configs: Sequence[RunConfig]) -> StudyReport:
    """The comparison of ``study``'s variants, each read from the run of its config (``configs`` in the
    study's order). The ordering's steps: the measured rows with a paper figure grouped by it, each row
    of a group against each of the next lower group (tied figures claim no order between them)."""
    rows = tuple(_row(variant, config) for variant, config in zip(study.variants, configs, strict=True))
    groups: dict[float, list[tuple[StudyRow, RunConfig]]] = {}
    for row, config in zip(rows, configs, strict=True):
        if row.variant.paper is not None and row.map is not None:
            groups.setdefault(row.variant.paper, []).append((row, config))
    levels = [groups[paper] for paper in sorted(groups, reverse=True)]
    datasets: dict[DataSettings, Dataset] = {}
    steps = [
        _step(higher, lower, datasets)
        for above, below in itertools.pairwise(levels)
        for higher in above
        for lower in below
    ]
    return StudyReport(study, rows, tuple(steps), *_seconds([row.run for row in rows]))


def _file_key(path: Path) -> tuple[int, int] | str:
    """What tells a file from the others: its device and inode (a link shares them), or its path."""
    try:
        stat = path.stat()
    except OSError:
        return str(path)
    return stat.st_dev, stat.st_ino


def _seconds(runs: Sequence[RunLayout]) -> tuple[float, float]:
    """(the seconds of every stage of ``runs`` and their replicas, the same with each shared file counted
    once): a file taken from another run is a link to the same inode, its manifest the same seconds."""
    alone, made = 0.0, {}
    for run in runs:
        for layout in run.replicas() if run.root.is_dir() else []:
            for path in layout.manifests():
                try:
                    manifest = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    continue  # a damaged manifest: its stage is made again by the next run, not counted
                artifact = path.with_name(manifest.get("artifact", path.name))
                seconds = float(manifest.get("seconds") or 0.0)
                alone += seconds
                key = _file_key(artifact)
                made[key] = seconds
    return alone, sum(made.values())


def _row(variant: StudyVariant, config: RunConfig) -> StudyRow:
    run = config.run.layout
    if not run.root.is_dir():
        return StudyRow(variant, run, None)
    result = _measured(variant.measure, run, config.data.test)
    seeds: list[tuple[int, float]] = []
    replicas, _ = current_replicas(run)
    for replica in replicas if result is not None else []:
        found = _measured(variant.measure, replica, config.data.test)
        value = None if found is None else _value(found, variant.measure)
        if value is not None:
            seeds.append((replica.replica_offset, value))
    own = None if result is None else _value(result, variant.measure)
    return StudyRow(variant, run, result, ((0, own), *seeds) if seeds and own is not None else ())


def _measured(measure: Measure, run: RunLayout, split: str) -> MethodResult | None:
    """The evaluation ``measure`` names in ``run`` on ``split``; None before it is made."""
    for result in report(run).results:
        if (result.method, result.variant, result.split) == (measure.method, measure.variant, split):
            return result
    return None


def _value(result: MethodResult, measure: Measure) -> float | None:
    return result.map if measure.box_regression else result.map_without_box_regression


def _step(
    higher: tuple[StudyRow, RunConfig],
    lower: tuple[StudyRow, RunConfig],
    datasets: dict[DataSettings, Dataset],
) -> OrderingStep:
    """``higher`` against ``lower`` (rows with their configs): over their seeds where both have two or
    more, else by the paired bootstrap over their test split's images, where both were scored alike."""
    (first, first_config), (second, second_config) = higher, lower
    a, b = first.spread, second.spread
    if a is not None and b is not None:
        compared = seed_differences([a, b])[0]
        test = "paired t-test over the seeds" if compared.paired else "Welch's t-test over the seeds"
        return OrderingStep(first, second, compared.difference, compared.p_value, test)
    assert first.map is not None and second.map is not None and first.result and second.result
    difference = first.map - second.map
    if not (first.variant.measure.box_regression and second.variant.measure.box_regression):
        return OrderingStep(first, second, difference, None, "no detections file without box regression")
    if (first_config.data, first.result.metric) != (second_config.data, second.result.metric):
        return OrderingStep(first, second, difference, None, "scored on other data or another metric")
    try:
        found = paired_difference(_evaluation(*higher, datasets), _evaluation(*lower, datasets))
    except UserError as exc:
        return OrderingStep(first, second, difference, None, f"no test: {exc}")
    noise = "paired bootstrap over the test images"
    return OrderingStep(first, second, difference, None if found is None else found.p_value, noise)


def _evaluation(row: StudyRow, config: RunConfig, datasets: dict[DataSettings, Dataset]) -> Evaluation:
    """The row's evaluation scored again from its detections file, for the matches the JSON does not
    keep: on the test split its run read, the untrained classes left out of the mAP as they were."""
    assert row.result is not None
    data = config.data
    if data not in datasets:
        datasets[data] = load_dataset(
            Path(data.root), data.test, data.classes, data.skip_bad, format=data.format
        )
    measure = row.variant.measure
    path = METHODS[measure.method].files(row.run).detections(row.result.split, measure.variant)
    return evaluate(datasets[data], read_detections(path), row.result.metric, untrained=row.result.untrained)
