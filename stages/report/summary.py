"""The results of a run folder in one place: each method's mAP and the time every stage took.

Everything comes from the artifacts: each method's evaluation results for accuracy and the manifests
beside every artifact for timings, so the report can be made at any time and never runs anything. What
counts as a method's test and training time is the method's to say (``stages.methods``).
"""

from __future__ import annotations

import json
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.core.errors import UserError
from stages.methods import METHODS
from stages.methods.base import PLAIN
from stages.proposals.propose import LOW_RECALL
from stages.proposals.recall import RecallCurves
from stages.runs.layout import MANIFEST_SUFFIX, RunLayout


def _shares(counts: dict[str, int]) -> dict[str, float]:
    """Each type's share of the false positives ``counts`` (0 without any)."""
    total = sum(counts.values())
    return {kind: count / total if total else 0.0 for kind, count in counts.items()}


@dataclass(frozen=True)
class ErrorDiagnosis:
    """An evaluation's error diagnosis as its JSON records it (``stages.evaluation.diagnosis``): the
    top-ranked false positives by type (loc, sim, oth, bg), and without box regression where it was
    trained; the PR breakdown's mean APs (c75 ... fn); AP by object size; where the similar classes came
    from; and its plot."""

    false_positives: dict[str, int]
    without_box_regression: dict[str, int] | None
    breakdown: dict[str, float | None]
    ap_by_size: dict[str, float | None]
    similar: str
    plot: Path

    @property
    def shares(self) -> dict[str, float]:
        """Each type's share of the top-ranked false positives (0 without any)."""
        return _shares(self.false_positives)

    @property
    def loc_share_without_box_regression(self) -> float | None:
        """The Loc errors' share before box regression; None where it was not trained."""
        unregressed = self.without_box_regression
        return None if unregressed is None else _shares(unregressed)["loc"]

    @classmethod
    def read(cls, path: Path) -> ErrorDiagnosis:
        content = _read(path)
        without = content.get("without_box_regression")
        return cls(
            content.get("false_positives", {}),
            None if without is None else without.get("false_positives", {}),
            {k: v for k, v in content.get("pr_breakdown", {}).items() if k != "by_class"},
            {size: found.get("ap") for size, found in content.get("ap_by_size", {}).items()},
            content.get("similar", {}).get("source", "none"),
            path.with_suffix(".png"),
        )


@dataclass(frozen=True)
class MethodResult:
    """One evaluation: accuracy, test seconds an image (proposals excluded, and with them) and training
    seconds (the method's own stages; proposals and pre-training are shared by all methods and not
    counted)."""

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
    test_seconds_with_proposals: float | None = None
    """Test seconds an image with the proposals' own (``Method.test_seconds_with_proposals``)."""
    map_ci95: tuple[float, float] | None = None
    """The mAP's 95% interval by bootstrap over the test images (``stages.evaluation.bootstrap``)."""
    diagnosis: ErrorDiagnosis | None = None
    """Its error diagnosis, where the evaluation made one (``rcnn run``, ``rcnn evaluate --diagnose``)."""


@dataclass(frozen=True)
class SplitProposals:
    """A split's proposals: how they were made (``source``: selective search and its mode, a network's
    proposer, or ``imported``), how many, and the share of the split's objects they find at IoU 0.5 and
    0.7 (None without annotations)."""

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
class ProposerRecall:
    """A proposer's recall against IoU on a split (``stages.proposals.recall``): a proposals file's
    (``label``: its source) or the proposals a method's network made at its evaluation."""

    label: str
    split: str
    curves: RecallCurves
    method: str = ""
    """The method whose network made them (its colour in charts); empty for a proposals file."""


NOISE_LEVEL = 0.05
"""Two methods differ beyond the training noise when the t-test over their seeds' mAPs
(``SeedDifference``) gives p below this."""


@dataclass(frozen=True)
class SeedSpread:
    """One evaluation over the run's seeds (``rcnn run --seeds``): the mAP of the run and of each
    replica, as (seed offset, mAP)."""

    label: str
    method: str
    variant: str
    split: str
    maps: tuple[tuple[int, float], ...]

    @property
    def mean(self) -> float:
        return float(np.mean([value for _, value in self.maps]))

    @property
    def std(self) -> float:
        """The sample standard deviation (n - 1); NaN for one seed."""
        values = [value for _, value in self.maps]
        return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


@dataclass(frozen=True)
class SeedDifference:
    """Two evaluations of a split compared over their seeds: the difference of their mean mAPs and the
    t-test of it. ``paired`` when both have the same seeds: each seed replicates the whole run, the
    pre-trained backbone included, so the two methods' mAPs are compared seed by seed (Student's paired
    t-test); else Welch's (unequal variances; Welch, Biometrika 1947)."""

    first: SeedSpread
    second: SeedSpread
    p_value: float
    paired: bool

    @property
    def difference(self) -> float:
        return self.first.mean - self.second.mean

    @property
    def beyond_noise(self) -> bool:
        return self.p_value < NOISE_LEVEL


def seed_differences(spreads: Sequence[SeedSpread]) -> list[SeedDifference]:
    """Each pair of evaluations of the same split with at least two seeds each, in the report's order."""
    found = []
    for index, first in enumerate(spreads):
        for second in spreads[index + 1 :]:
            if first.split != second.split or min(len(first.maps), len(second.maps)) < 2:
                continue
            a, b = dict(first.maps), dict(second.maps)
            paired = a.keys() == b.keys()
            found.append(SeedDifference(first, second, _p_value(a, b, paired), paired))
    return found


def _p_value(a: dict[int, float], b: dict[int, float], paired: bool) -> float:
    """The two-sided p of the t-test of mean(a) = mean(b) (seed offset -> mAP); where the statistic's
    spread is 0 (t undefined): 1 for equal means, else 0."""
    from scipy import stats

    if paired:
        differences = [a[seed] - b[seed] for seed in a]
        if np.ptp(differences) == 0:
            return 1.0 if differences[0] == 0 else 0.0
        return float(stats.ttest_rel(list(a.values()), [b[seed] for seed in a]).pvalue)
    if np.ptp(list(a.values())) == 0 and np.ptp(list(b.values())) == 0:
        return 1.0 if next(iter(a.values())) == next(iter(b.values())) else 0.0
    return float(stats.ttest_ind(list(a.values()), list(b.values()), equal_var=False).pvalue)


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
    recall: tuple[ProposerRecall, ...] = ()
    """Each proposer's recall curves: the proposals files', then each method's own network's."""
    seeds: tuple[SeedSpread, ...] = ()
    """Each evaluation over the run's seeds, where it has replicas (``RunLayout.replicas``)."""
    replica_seconds: float = 0.0
    """The time of every stage of the replicas, which ``stages`` leaves out."""
    stale_replicas: tuple[str, ...] = ()
    """Replicas left out of ``seeds``: made with another config than the run's (the run changed since)."""

    @property
    def total_seconds(self) -> float:
        return sum(s.seconds for s in self.stages)


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable ({exc})") from None


def _pair(found: list[float] | None) -> tuple[float, float] | None:
    return None if not found else (float(found[0]), float(found[1]))


def report(run: RunLayout) -> RunReport:
    """Collect the results and stage timings recorded in ``run``, methods in the lineage's order, and
    each evaluation's spread over the run's replicas."""
    if not run.root.is_dir():
        raise UserError(f"{run}: no such run folder")
    results, proposers = _evaluations(run)
    replicas, stale = current_replicas(run)
    stages, proposals, searched = [], [], []
    for path in run.manifests():  # each read once: the stage times, and each split's proposals
        manifest = _read(path)
        name = manifest.get("artifact", path.name.removesuffix(MANIFEST_SUFFIX))
        artifact = path.with_name(name).relative_to(run.root)
        stage = StageTime(manifest.get("stage", "?"), str(artifact), float(manifest.get("seconds", 0.0)))
        stages.append((manifest.get("created", ""), str(artifact), stage))
        if stage.stage == "propose":
            split = _split_proposals(artifact.stem, manifest)
            proposals.append(split)
            if curves := manifest.get("results", {}).get("recall_curves"):
                searched.append(ProposerRecall(split.source, split.split, RecallCurves.from_json(curves)))
    stages.sort(key=lambda item: item[:2])
    return RunReport(
        tuple(results),
        tuple(stage for *_, stage in stages),
        tuple(proposals),
        tuple(sorted(searched, key=lambda p: p.split) + sorted(proposers, key=lambda p: p.split)),
        _seed_spreads(results, replicas),
        sum(float(_read(path).get("seconds", 0.0)) for replica in replicas for path in replica.manifests()),
        tuple(str(replica) for replica in stale),
    )


def current_replicas(run: RunLayout) -> tuple[list[RunLayout], list[RunLayout]]:
    """(the replicas of ``run`` made with its config, the others): a replica counts when its
    ``config.toml`` is the run's made a replica (``RunConfig.replica``), so that a run changed since
    its seeds were made is not compared with them."""
    from stages.config.run_config import load_config

    replicas = run.replicas()[1:]
    try:
        config = load_config(run.config) if replicas else None
    except UserError:
        config = None
    current: list[RunLayout] = []
    stale: list[RunLayout] = []
    for replica in replicas:
        try:
            made = load_config(replica.config) if config is not None else None
        except UserError:
            made = None
        same = made is not None and config is not None and made == config.replica(replica.replica_offset)
        (current if same else stale).append(replica)
    return current, stale


def _evaluations(run: RunLayout) -> tuple[list[MethodResult], list[ProposerRecall]]:
    """Every evaluation of ``run``, methods in the lineage's order, and the recall of the proposals each
    method's own network made."""
    results, proposers = [], []
    for method in METHODS.values():
        found = []
        files = method.files(run)
        for path in files.evaluations():
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
                method.test_seconds_with_proposals(run, split, content),
                _pair(content.get("map_ci95")),
                ErrorDiagnosis.read(diagnosed)
                if (diagnosed := files.diagnosis(split, variant.key)).is_file()
                else None,
            )
            found.append((split, method.variants.index(variant), result))
            if (curves := content.get("proposal_recall")) and variant == PLAIN:
                proposers.append(
                    ProposerRecall(
                        f"{method.label}'s own", split, RecallCurves.from_json(curves), method.name
                    )
                )
        results += [result for *_, result in sorted(found, key=lambda item: item[:2])]
    return results, proposers


def _seed_spreads(results: Sequence[MethodResult], replicas: Sequence[RunLayout]) -> tuple[SeedSpread, ...]:
    """Each of ``results`` with the mAPs of the same evaluation in each of ``replicas``; none without
    replicas."""
    if not replicas:
        return ()
    key = operator.attrgetter("method", "variant", "split", "metric")
    maps: dict[tuple, list[tuple[int, float]]] = {key(r): [(0, r.map)] for r in results if r.map is not None}
    for replica in replicas:
        for result in _evaluations(replica)[0]:
            if key(result) in maps and result.map is not None:
                maps[key(result)].append((replica.replica_offset, result.map))
    return tuple(
        SeedSpread(r.label, r.method, r.variant, r.split, tuple(maps[key(r)]))
        for r in results
        if key(r) in maps
    )


def _split_proposals(split: str, manifest: dict) -> SplitProposals:
    """A split's proposals as their manifest records them."""
    options, results = manifest.get("options", {}), manifest.get("results", {})
    source = str(options.get("source"))
    named = {"selective_search": f"selective search ({options.get('mode')})", "import": "imported"}
    return SplitProposals(
        split,
        named.get(source, source.upper()),  # a network's proposer: rpn -> RPN
        int(results.get("images", 0)),
        float(results.get("boxes_per_image", 0.0)),
        results.get("recall") or None,
        float(manifest.get("seconds", 0.0)),
    )
