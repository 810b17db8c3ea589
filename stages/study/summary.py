"""A study's comparison: each variant's measured mAP (its interval, its seeds' spread), test and training
time, beside the paper's figure for the row; and whether the paper's ordering held on this data.

The ordering is tested step by step: the rows that record a paper figure, in the paper's order, each
against the next (a paper's tie claims no order). A step holds when the row the paper puts higher
measures higher here. Whether it is beyond the noise: over the training seeds where both rows have at
least two (``rcnn study --seeds``; the t-test of ``stages.report.summary.seed_differences``, paired when
the seeds agree), else over the test images (the paired bootstrap of
``stages.evaluation.bootstrap.paired_difference``), which does not see the training's noise.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from stages.config.run_config import RunConfig
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
        if self.result is None:
            return None
        return (
            self.result.map if self.variant.measure.box_regression else self.result.map_without_box_regression
        )

    @property
    def ci95(self) -> tuple[float, float] | None:
        """The interval over the test images: the evaluation's, for the mAP with box regression."""
        return self.result.map_ci95 if self.result and self.variant.measure.box_regression else None

    @property
    def spread(self) -> SeedSpread | None:
        """The row's mAP over its seeds, where it has two or more."""
        if len(self.seeds) < 2:
            return None
        return SeedSpread(self.variant.label, self.variant.name, "", "", self.seeds)


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
        if not self.steps:
            measured = sum(row.map is not None for row in self.rows)
            if sum(row.variant.paper is not None for row in self.rows) < 2:
                return "The study records fewer than two paper figures: no ordering to test."
            return f"Not measured yet: {measured} of {len(self.rows)} variants evaluated."
        held = all(step.held for step in self.steps)
        chain = " > ".join(
            dict.fromkeys(
                name for s in self.steps for name in (s.higher.variant.label, s.lower.variant.label)
            )
        )
        if held:
            beyond = [s for s in self.steps if s.beyond_noise]
            if len(beyond) == len(self.steps):
                noise = "every step beyond the noise"
            elif not beyond:
                noise = "no step beyond the noise"
            else:
                noise = "beyond the noise: " + ", ".join(_pair(s) for s in beyond) + "; within it the rest"
            return f"The paper's ordering held ({chain}), {noise} ({self.noise})."
        said = "; ".join(_reversal(s) for s in self.steps if not s.held)
        return f"The paper's ordering ({chain}) did not hold: {said} ({self.noise})."

    @property
    def noise(self) -> str:
        """The noise the ordering's steps were tested against."""
        tested = [step.noise for step in self.steps if step.p_value is not None]
        return tested[0] if tested else self.steps[0].noise


def _pair(step: OrderingStep) -> str:
    return f"{step.higher.variant.label} > {step.lower.variant.label}"


def _reversal(step: OrderingStep) -> str:
    """A step that did not hold: the rows tied, or the lower one above by how much, and the test's say."""
    lower, higher = step.lower.variant.label, step.higher.variant.label
    if step.difference == 0:
        return f"{lower} = {higher}"
    if step.p_value is None:
        noise = "no test"
    else:
        noise = f"{'beyond' if step.beyond_noise else 'within'} the noise, p {step.p_value:.2f}"
    return f"{lower} > {higher} by {-step.difference:.3f} ({noise})"


def study_report(study: Study, configs: Sequence[RunConfig]) -> StudyReport:
    """The comparison of ``study``'s variants, each read from the run of its config (``configs`` in the
    study's order); the test split read once, for the paired bootstrap."""
    rows = tuple(
        _row(variant, config.run.layout) for variant, config in zip(study.variants, configs, strict=True)
    )
    ordered = sorted(
        (row for row in rows if row.variant.paper is not None), key=lambda row: -(row.variant.paper or 0)
    )
    steps = []
    dataset: list[Dataset] = []
    for higher, lower in itertools.pairwise(ordered):
        if higher.variant.paper == lower.variant.paper or higher.map is None or lower.map is None:
            continue
        steps.append(_step(higher, lower, configs[0], dataset))
    return StudyReport(study, rows, tuple(steps), *_seconds([row.run for row in rows]))


def _seconds(runs: Sequence[RunLayout]) -> tuple[float, float]:
    """(the seconds of every stage of ``runs`` and their replicas, the same with each shared file counted
    once): a file taken from another run is a link to the same inode, its manifest the same seconds."""
    alone, made = 0.0, {}
    for run in runs:
        for layout in run.replicas() if run.root.is_dir() else []:
            for path in layout.manifests():
                manifest = json.loads(path.read_text(encoding="utf-8"))
                artifact = path.with_name(manifest.get("artifact", path.name))
                seconds = float(manifest.get("seconds", 0.0))
                alone += seconds
                key = artifact.stat().st_ino if artifact.is_file() else str(artifact)
                made[key] = seconds
    return alone, sum(made.values())


def _row(variant: StudyVariant, run: RunLayout) -> StudyRow:
    if not run.root.is_dir():
        return StudyRow(variant, run, None)
    result = _measured(variant.measure, run)
    seeds: list[tuple[int, float]] = []
    replicas, _ = current_replicas(run)
    for replica in replicas if result is not None else []:
        found = _measured(variant.measure, replica)
        value = None if found is None else _value(found, variant.measure)
        if value is not None:
            seeds.append((replica.replica_offset, value))
    own = None if result is None else _value(result, variant.measure)
    return StudyRow(variant, run, result, ((0, own), *seeds) if seeds and own is not None else ())


def _measured(measure: Measure, run: RunLayout) -> MethodResult | None:
    """The evaluation ``measure`` names in ``run``, on its config's test split; None before it is made."""
    for result in report(run).results:
        if result.method == measure.method and result.variant == measure.variant:
            return result
    return None


def _value(result: MethodResult, measure: Measure) -> float | None:
    return result.map if measure.box_regression else result.map_without_box_regression


def _step(higher: StudyRow, lower: StudyRow, config: RunConfig, dataset: list[Dataset]) -> OrderingStep:
    a, b = higher.spread, lower.spread
    if a is not None and b is not None:
        compared = seed_differences([a, b])[0]
        test = "paired t-test over the seeds" if compared.paired else "Welch's t-test over the seeds"
        return OrderingStep(higher, lower, compared.difference, compared.p_value, test)
    assert higher.map is not None and lower.map is not None
    difference = higher.map - lower.map
    noise = "paired bootstrap over the test images"
    if not (higher.variant.measure.box_regression and lower.variant.measure.box_regression):
        return OrderingStep(higher, lower, difference, None, "no test without box regression's detections")
    if not dataset:
        data = config.data
        dataset.append(
            load_dataset(Path(data.root), data.test, data.classes, data.skip_bad, format=data.format)
        )
    first, second = (_evaluation(row, dataset[0]) for row in (higher, lower))
    found = paired_difference(first, second)
    if found is None:
        return OrderingStep(higher, lower, difference, None, noise)
    return OrderingStep(higher, lower, difference, found.p_value, noise)


def _evaluation(row: StudyRow, dataset: Dataset) -> Evaluation:
    """The row's evaluation scored again from its detections file, for the matches the JSON does not keep."""
    assert row.result is not None
    measure = row.variant.measure
    path = METHODS[measure.method].files(row.run).detections(row.result.split, measure.variant)
    try:
        return evaluate(dataset, read_detections(path), row.result.metric)
    except UserError as exc:
        raise UserError(f"study {row.variant.label!r}: {exc}") from None
