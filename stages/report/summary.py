"""The results of a run folder in one place: each method's mAP and the time every stage took.

Everything comes from the artifacts: each method's evaluation results for accuracy and the manifests
beside every artifact for timings, so the report can be made at any time and never runs anything. What
counts as a method's test and training time is the method's to say (``stages.methods``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from stages.core.errors import UserError
from stages.methods import METHODS
from stages.proposals.propose import LOW_RECALL
from stages.runs.layout import MANIFEST_SUFFIX, RunLayout


@dataclass(frozen=True)
class MethodResult:
    """One evaluation: accuracy, test seconds an image (proposals excluded) and training seconds (the
    method's own stages; proposals and pre-training are shared by all methods and not counted)."""

    label: str
    split: str
    metric: str
    map: float | None
    map_without_box_regression: float | None
    test_seconds_per_image: float | None = None
    training_seconds: float | None = None
    method: str = ""
    """The method's name: its folder ``RUN/<method>/``."""
    variant: str = ""
    """Which form of the method's network (``stages.methods.base.Variant.key``; empty: as trained)."""
    class_ap: tuple[tuple[str, float | None], ...] = ()
    """(class, AP) in the dataset's class order; None for a class without positives."""
    untrained: tuple[str, ...] = ()
    """Classes with no object in the training split: scored, left out of the mAP."""


@dataclass(frozen=True)
class SplitProposals:
    """A split's proposals: how they were made (``source``: selective search's mode, or ``imported``),
    how many, and the share of the split's objects they find at IoU 0.5 and 0.7 (None without
    annotations)."""

    split: str
    source: str
    images: int
    boxes_per_image: float
    recall: dict[str, float] | None
    seconds: float

    @property
    def low_recall(self) -> bool:
        """Whether the proposals miss so many objects that they, not the detectors, limit the mAP."""
        return self.recall is not None and self.recall.get("0.5", 1.0) < LOW_RECALL


@dataclass(frozen=True)
class StageTime:
    stage: str
    artifact: str
    seconds: float


@dataclass(frozen=True)
class RunReport:
    results: tuple[MethodResult, ...]
    stages: tuple[StageTime, ...]
    proposals: tuple[SplitProposals, ...] = ()

    @property
    def total_seconds(self) -> float:
        return sum(s.seconds for s in self.stages)


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable ({exc})") from None


def report(run: RunLayout) -> RunReport:
    """Collect the results and stage timings recorded in ``run``, methods in the lineage's order."""
    if not run.root.is_dir():
        raise UserError(f"{run}: no such run folder")
    results = []
    for method in METHODS.values():
        found = []
        for path in method.files(run).evaluations():
            content = _read(path)
            split = content.get("split", path.stem)
            variant = method.variant_of(content)
            result = MethodResult(
                method.row_label(variant),
                split,
                content.get("metric", "?"),
                content.get("map"),
                content.get("map_without_box_regression"),
                method.test_seconds(run, split, content),
                method.training_seconds(run, variant),
                method.name,
                variant.key,
                tuple(content.get("ap", {}).items()),
                tuple(content.get("untrained_classes", ())),
            )
            found.append((split, method.variants.index(variant), result))
        results += [result for *_, result in sorted(found, key=lambda item: item[:2])]
    stages, proposals = [], []
    for path in run.manifests():  # each read once: the stage times, and each split's proposals
        manifest = _read(path)
        name = manifest.get("artifact", path.name.removesuffix(MANIFEST_SUFFIX))
        artifact = path.with_name(name).relative_to(run.root)
        stage = StageTime(manifest.get("stage", "?"), str(artifact), float(manifest.get("seconds", 0.0)))
        stages.append((manifest.get("created", ""), str(artifact), stage))
        if stage.stage == "propose":
            proposals.append(_split_proposals(artifact.stem, manifest))
    stages.sort(key=lambda item: item[:2])
    return RunReport(tuple(results), tuple(stage for *_, stage in stages), tuple(proposals))


def _split_proposals(split: str, manifest: dict) -> SplitProposals:
    """A split's proposals as their manifest records them."""
    options, results = manifest.get("options", {}), manifest.get("results", {})
    return SplitProposals(
        split,
        str(options.get("mode")) if options.get("source") == "selective_search" else "imported",
        int(results.get("images", 0)),
        float(results.get("boxes_per_image", 0.0)),
        results.get("recall") or None,
        float(manifest.get("seconds", 0.0)),
    )
