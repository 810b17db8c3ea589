"""Where a detector's errors come from: the analysis of Hoiem, Chodpathumwan and Dai ("Diagnosing Error in
Object Detectors", ECCV 2012) behind R-CNN's "Detection error analysis" and its chart of top-ranked
false positive types, and the precision-recall breakdown of the COCO API's ``analyze``.

Matching is VOC's (``metrics.match_greedy``): per class, detections best score first, each to its
best-IoU object of the class in its image; at IoU >= 0.5 with a difficult object it is neither hit nor
error, and left out of everything below; with a free object it is a hit; else a false positive, of the
first type that applies (difficult objects count here as any other):

- loc: IoU >= 0.1 with an object of its class: a poor box, or a duplicate of a hit;
- sim: IoU >= 0.1 with an object of a similar class (``SimilarClasses``: one sharing a group with it);
- oth: IoU >= 0.1 with an object of any other class;
- bg: none of these: the background.

Top-ranked false positives (Hoiem's): those among each class's first counted detections, as many as its
non-difficult objects (where a perfect detector would have found them all), by type, summed over the
trained classes. Their growth (Hoiem's and R-CNN's charts): the same with each class's first m x objects
counted detections (rounded half up) for m in ``MULTIPLES``, then with all of them.

PR breakdown (COCO's ``analyze``), each class's AP under the VOC ``metric`` as the errors are fixed kind
by kind: C75 (hits at IoU 0.75), C50 (at 0.5: ``evaluate``'s AP), Loc (at 0.1: poor boxes become hits,
duplicates stay false positives), Sim (Loc's less its false positives of type sim, typed as above under
the 0.1 matching), Oth (less those of type oth too), BG (less every false positive), FN (1: no object
missed); means over the trained classes with positives. Removing false positives never lowers AP, so
Loc <= Sim <= Oth <= BG <= FN; the levels before Loc match differently and need not be ordered.

AP by size (COCO's, on the box's area: small below 32², large above 96², medium between): objects of the
other sizes are ignored as difficult ones are, and a false positive counts only if its own box is of the
size. Where the split marks truncated objects (VOC's ``<truncated>``), the AP of the truncated ones and of
the others: objects of the other kind are ignored as difficult ones are, and a false positive counts in
both, since a box alone cannot tell whether its object is cut by the border. Where the split marks
difficult objects, also the AP with them counted as any other object.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from stages.core.errors import UserError
from stages.core.geometry import box_iou
from stages.datasets.records import Dataset, ImageRecord
from stages.datasets.voc import VOC_CLASSES
from stages.detections.files import Detections
from stages.evaluation.metrics import ClassMatches, average_precision, check_classes, match_greedy

METRICS = ("voc07", "voc10")
"""The metrics a diagnosis scores under: it sorts VOC's matches; COCO's metric is pycocotools' own."""

TYPES = ("loc", "sim", "oth", "bg")
"""The types of false positive, in the order they are tried."""

LEVELS = ("c75", "c50", "loc", "sim", "oth", "bg", "fn")
"""The PR breakdown, each level fixing more errors than the one before."""

ABBREVIATIONS = {"c75": "C75", "c50": "C50", "loc": "Loc", "sim": "Sim", "oth": "Oth", "bg": "BG", "fn": "FN"}
"""How tables and legends name the types and the levels."""

TOUCH = 0.1
"""Hoiem's least IoU for a box to be on an object: below it, on the background."""

MULTIPLES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
"""Each class's top detections, as multiples of its objects, at which the false positives are typed as
they grow; then all its detections."""

SIZES = ("small", "medium", "large")
TRUNCATION = ("truncated", "not_truncated")
SMALL, LARGE = 32**2, 96**2
"""COCO's bounds on an object's area in pixels: small below the first, large above the second."""

RECALLS = np.linspace(0, 1, 101)
"""COCO's recall points, at which each PR curve is sampled for the mean curves drawn."""

HOIEM_VOC_GROUPS = (
    ("bird", "cat", "cow", "dog", "horse", "person", "sheep"),  # animals, the person with them
    ("aeroplane", "bicycle", "boat", "bus", "car", "motorbike", "train"),  # vehicles
    ("chair", "diningtable", "sofa"),  # furniture
    ("aeroplane", "bird"),  # what flies
)
"""Hoiem et al.'s similar classes of VOC (their code's ``detectionAnalysisScript``; their slides name a
person among a dog's similar objects, a bird among an aeroplane's). Their fifth group, bicycle and
motorbike, is within the vehicles."""

SOURCES = {
    "config": "from the config",
    "hoiem": "Hoiem et al.'s VOC groups",
    "supercategories": "COCO's supercategories",
    "none": "none (every confusion is Oth)",
}
"""Where the similar classes came from, and how a figure says it."""


@dataclass(frozen=True)
class SimilarClasses:
    """Groups of classes a detector may take for one another (a class may be in several), and their
    ``source`` (a key of ``SOURCES``)."""

    groups: tuple[tuple[str, ...], ...]
    source: str

    def of(self, name: str) -> frozenset[str]:
        """The classes other than ``name`` that share a group with it."""
        return frozenset(other for group in self.groups if name in group for other in group) - {name}

    def to_json(self) -> dict:
        return {"source": self.source, "groups": [list(group) for group in self.groups]}


def similar_classes(dataset: Dataset, groups: Sequence[Sequence[str]] | None = None) -> SimilarClasses:
    """The ``groups`` given (a config's), checked to name the dataset's classes; else Hoiem's groups for
    VOC's 20 classes, the supercategories where the dataset has them (COCO's), or none."""
    if groups is not None:
        if any(isinstance(group, str) for group in groups):
            raise UserError("similar classes: each group is a list of class names")
        unknown = sorted({name for group in groups for name in group} - set(dataset.classes))
        if unknown:
            raise UserError(
                f"similar classes name classes the dataset does not have: {', '.join(unknown)} "
                f"(dataset classes: {', '.join(dataset.classes)})"
            )
        return SimilarClasses(tuple(tuple(group) for group in groups), "config")
    if set(dataset.classes) == set(VOC_CLASSES):
        return SimilarClasses(HOIEM_VOC_GROUPS, "hoiem")
    members: dict[str, list[str]] = {}
    for name, supercategory in zip(dataset.classes, dataset.supercategories, strict=False):
        if supercategory:
            members.setdefault(supercategory, []).append(name)
    if members:
        return SimilarClasses(tuple(tuple(names) for names in members.values()), "supercategories")
    return SimilarClasses((), "none")


@dataclass(frozen=True)
class ClassDiagnosis:
    """One class: its non-difficult objects; the outcome of each of its counted detections, best first
    (K,): -1 for a hit, else the index in ``TYPES`` of the false positive's type; its AP at each level of
    ``LEVELS``, at each of ``SIZES`` and of ``TRUNCATION`` (NaN without positives; the last None where
    the split does not mark truncation); and with difficult objects counted (None where the split has
    none)."""

    name: str
    objects: int
    outcomes: np.ndarray = field(repr=False, compare=False)
    breakdown: dict[str, float]
    by_size: dict[str, float]
    by_truncation: dict[str, float] | None
    difficult_counted: float | None

    def false_positives(self, multiple: float | None = 1.0) -> dict[str, int]:
        """Each type's false positives among the first ``multiple`` x objects counted detections (rounded
        half up; None: all of them); by default the top-ranked."""
        top = len(self.outcomes) if multiple is None else int(multiple * self.objects + 0.5)
        found = np.bincount(self.outcomes[:top] + 1, minlength=len(TYPES) + 1)
        return {kind: int(count) for kind, count in zip(TYPES, found[1:], strict=True)}


@dataclass(frozen=True)
class Growth:
    """The false positives by type, summed over the trained classes, among each class's first ``multiple``
    x objects counted detections (None: all of them)."""

    multiple: float | None
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def fractions(self) -> dict[str, float]:
        """Each type's share of the false positives (NaN without any)."""
        return {
            kind: count / self.total if self.total else float("nan") for kind, count in self.counts.items()
        }


@dataclass(frozen=True)
class Diagnosis:
    """Every class's diagnosis; the mean PR curve of each level of the breakdown over the trained classes
    with positives ((101,) precision at ``RECALLS``); the split's non-difficult objects of each size and
    of each kind of ``TRUNCATION`` (None where it does not mark truncation), and its difficult ones."""

    metric: str
    similar: SimilarClasses
    classes: tuple[ClassDiagnosis, ...]
    curves: dict[str, np.ndarray] = field(repr=False, compare=False)
    objects_by_size: dict[str, int]
    objects_by_truncation: dict[str, int] | None
    difficult_objects: int
    untrained: tuple[str, ...] = ()
    """Classes the detector had no object of to learn from: diagnosed, but left out of sums and means."""

    @property
    def trained(self) -> tuple[ClassDiagnosis, ...]:
        return tuple(c for c in self.classes if c.name not in self.untrained)

    @property
    def false_positives(self) -> dict[str, int]:
        """The top-ranked false positives by type, summed over the trained classes."""
        return _summed(c.false_positives() for c in self.trained)

    @property
    def growth(self) -> tuple[Growth, ...]:
        """The top-ranked false positives as each class's share grows: ``MULTIPLES``, then all."""
        return tuple(
            Growth(multiple, _summed(c.false_positives(multiple) for c in self.trained))
            for multiple in (*MULTIPLES, None)
        )

    @property
    def breakdown(self) -> dict[str, float]:
        """Each level's mean AP over the trained classes with positives."""
        return {level: _mean(c.breakdown[level] for c in self.trained) for level in LEVELS}

    @property
    def ap_by_size(self) -> dict[str, float]:
        """Each size's mean AP over the trained classes with positives of that size."""
        return {size: _mean(c.by_size[size] for c in self.trained) for size in SIZES}

    @property
    def ap_by_truncation(self) -> dict[str, float] | None:
        """Each kind of ``TRUNCATION``'s mean AP over the trained classes with positives of that kind;
        None where the split does not mark truncation."""
        if self.objects_by_truncation is None:
            return None
        return {
            kind: _mean(c.by_truncation[kind] for c in self.trained if c.by_truncation is not None)
            for kind in TRUNCATION
        }

    @property
    def difficult_counted(self) -> float | None:
        """The mean AP with difficult objects counted as positives; None where the split has none."""
        if not self.difficult_objects:
            return None
        return _mean(c.difficult_counted for c in self.trained if c.difficult_counted is not None)

    def to_json(self) -> dict:
        """Counts as integers, APs and fractions to 6 digits (NaN as null); the keys are the module's."""
        difficult_counted = self.difficult_counted
        by_truncation, objects = self.ap_by_truncation, self.objects_by_truncation
        return {
            "metric": self.metric,
            "similar": self.similar.to_json(),
            "false_positives": self.false_positives,
            "false_positives_by_class": {c.name: c.false_positives() for c in self.classes},
            "false_positive_growth": [
                {
                    "multiple": "all" if point.multiple is None else point.multiple,
                    "false_positives": point.total,
                    "fractions": {kind: _finite(v) for kind, v in point.fractions.items()},
                }
                for point in self.growth
            ],
            "pr_breakdown": {
                **{level: _finite(v) for level, v in self.breakdown.items()},
                "by_class": {
                    c.name: {level: _finite(v) for level, v in c.breakdown.items()} for c in self.classes
                },
            },
            "ap_by_size": {
                size: {"ap": _finite(self.ap_by_size[size]), "objects": self.objects_by_size[size]}
                for size in SIZES
            },
            **(
                {
                    "ap_by_truncation": {
                        kind: {"ap": _finite(by_truncation[kind]), "objects": objects[kind]}
                        for kind in TRUNCATION
                    }
                }
                if by_truncation is not None and objects is not None
                else {}
            ),
            **(
                {
                    "difficult_counted": {
                        "ap": _finite(difficult_counted),
                        "objects": sum(self.objects_by_size.values()) + self.difficult_objects,
                    }
                }
                if difficult_counted is not None
                else {}
            ),
            **({"untrained_classes": list(self.untrained)} if self.untrained else {}),
        }


def diagnose(
    dataset: Dataset,
    detections: Detections,
    metric: str,
    similar: SimilarClasses,
    untrained: Sequence[str] = (),
) -> Diagnosis:
    """Diagnose ``detections`` on the annotated ``dataset`` under the VOC ``metric``, with the ``similar``
    classes (``similar_classes``). The ``untrained`` classes are diagnosed but left out of the sums and
    means, as out of the mAP. Detections on images outside the split are ignored, as ``evaluate`` does."""
    if metric not in METRICS:
        raise UserError(f"error diagnosis under --metric {metric!r}: choose {', '.join(METRICS)}")
    if not dataset.annotated:
        raise UserError(f"{dataset.root}: split {dataset.split!r} has no annotations to diagnose on")
    check_classes(dataset, detections)
    position = {r.image_id: i for i, r in enumerate(dataset.images)}
    in_split = np.isin(detections.image_ids, list(position))
    # COCO's crowd regions are read as difficult objects: counting them as objects would mean nothing
    has_difficult = dataset.format != "coco" and any(r.difficult.any() for r in dataset.images)
    marks_truncation = any(_truncated(r).any() for r in dataset.images)
    untrained = tuple(name for name in dataset.classes if name in set(untrained))
    rules = {"difficult": _Ignored.of(dataset, _difficult)}  # made once for every class
    rules |= {size: _Ignored.of(dataset, _difficult_or_other_size(i)) for i, size in enumerate(SIZES)}
    if marks_truncation:
        rules |= {kind: _Ignored.of(dataset, _difficult_or_other_truncation(kind)) for kind in TRUNCATION}
    if has_difficult:
        rules["nothing"] = _Ignored.of(dataset, _nothing)
    classes, curves = [], []
    for label, name in enumerate(dataset.classes, start=1):
        mine = in_split & (detections.classes == name)
        order = np.argsort(-detections.scores[mine], kind="stable")
        ranked = _RankedDetections.of(
            dataset, position, label, detections.image_ids[mine][order], detections.boxes[mine][order]
        )
        similar_labels = [dataset.classes.index(other) + 1 for other in similar.of(name)]
        found, level_curves = _diagnose_class(dataset, ranked, name, similar_labels, metric, rules)
        classes.append(found)
        if name not in untrained and found.objects:
            curves.append(level_curves)
    mean_curves = {
        level: np.mean([c[level] for c in curves], axis=0) if curves else np.full(len(RECALLS), np.nan)
        for level in LEVELS
    }
    sizes = np.concatenate(
        [np.zeros(0, np.int64), *(_size_of(r.boxes[~r.difficult]) for r in dataset.images)]
    )
    truncated = np.concatenate([np.zeros(0, bool), *(_truncated(r)[~r.difficult] for r in dataset.images)])
    by_truncation = {"truncated": int(truncated.sum()), "not_truncated": int((~truncated).sum())}
    return Diagnosis(
        metric,
        similar,
        tuple(classes),
        mean_curves,
        {size: int(n) for size, n in zip(SIZES, np.bincount(sizes, minlength=len(SIZES)), strict=True)},
        by_truncation if marks_truncation else None,
        sum(int(r.difficult.sum()) for r in dataset.images),
        untrained,
    )


Rule = Callable[[ImageRecord], np.ndarray]
"""Which objects (K,) of an image a matching leaves out, as VOC leaves out the difficult ones."""


@dataclass(frozen=True)
class _Ignored:
    """A ``Rule`` applied to the split once for every class: the objects it leaves out of each image
    ((K,) an image, in the split's order), and each image's objects of each label that count (C + 1, N)."""

    objects: tuple[np.ndarray, ...]
    positives: np.ndarray

    @classmethod
    def of(cls, dataset: Dataset, rule: Rule) -> _Ignored:
        objects = tuple(rule(record) for record in dataset.images)
        positives = np.zeros((len(dataset.classes) + 1, len(dataset.images)), dtype=np.int64)
        for image, (record, ignored) in enumerate(zip(dataset.images, objects, strict=True)):
            np.add.at(positives[:, image], record.labels[~ignored], 1)
        return cls(objects, positives)


def _difficult(record: ImageRecord) -> np.ndarray:
    return record.difficult


def _nothing(record: ImageRecord) -> np.ndarray:
    return np.zeros(len(record.labels), dtype=bool)


def _difficult_or_other_size(size: int) -> Rule:
    """The difficult objects and those not of ``size`` (an index in ``SIZES``)."""
    return lambda record: record.difficult | (_size_of(record.boxes) != size)


def _truncated(record: ImageRecord) -> np.ndarray:
    """(K,) the image's truncated objects: none where its dataset does not mark them."""
    return np.zeros(len(record.labels), dtype=bool) if record.truncated is None else record.truncated


def _difficult_or_other_truncation(kind: str) -> Rule:
    """The difficult objects and those not of ``kind`` (one of ``TRUNCATION``)."""
    wanted = kind == "truncated"
    return lambda record: record.difficult | (_truncated(record) != wanted)


@dataclass(frozen=True)
class _RankedDetections:
    """One class's detections on the split, best score first: the index in the split of each one's image
    (D,), the index in ``SIZES`` of its box's area (D,), and for each image with some of them: their ranks
    (d,), the image's index in the split, its objects' labels (K,) and their IoU with them (d, K)."""

    label: int
    images: np.ndarray
    sizes: np.ndarray
    overlaps: tuple[tuple[np.ndarray, int, np.ndarray, np.ndarray], ...]

    @classmethod
    def of(
        cls, dataset: Dataset, position: dict[str, int], label: int, image_ids: np.ndarray, boxes: np.ndarray
    ) -> _RankedDetections:
        """From the class's detections ranked best first: image ids (D,) and boxes (D, 4)."""
        by_image: dict[str, list[int]] = {}
        for rank, image_id in enumerate(image_ids.tolist()):
            by_image.setdefault(image_id, []).append(rank)
        overlaps = []
        for image_id, ranks in by_image.items():  # one IoU matrix an image
            image = position[image_id]
            record = dataset.images[image]
            overlaps.append((np.array(ranks), image, record.labels, box_iou(boxes[ranks], record.boxes)))
        images = np.array([position[i] for i in image_ids.tolist()], dtype=np.int64)
        return cls(label, images, _size_of(boxes), tuple(overlaps))

    def match(self, iou_threshold: float, ignored: _Ignored) -> tuple[np.ndarray, np.ndarray]:
        """VOC's matching to the class's objects, less the ``ignored``: (hit (D,), counted (D,) bool)."""
        hit = np.zeros(len(self.images), dtype=bool)
        counted = np.ones(len(self.images), dtype=bool)
        for ranks, image, labels, ious in self.overlaps:
            own = labels == self.label
            hit[ranks], counted[ranks] = match_greedy(
                ious[:, own], ignored.objects[image][own], iou_threshold
            )
        return hit, counted

    def best_overlap(self, wanted: np.ndarray) -> np.ndarray:
        """(D,) each detection's best IoU with an object (difficult or not) whose label ``wanted`` (C + 1,)
        marks; 0 for none."""
        best = np.zeros(len(self.images))
        for ranks, _, labels, ious in self.overlaps:
            best[ranks] = ious[:, wanted[labels]].max(axis=1, initial=0.0)
        return best


def _diagnose_class(
    dataset: Dataset,
    ranked: _RankedDetections,
    name: str,
    similar_labels: list[int],
    metric: str,
    rules: dict[str, _Ignored],
) -> tuple[ClassDiagnosis, dict[str, np.ndarray]]:
    """One class's diagnosis and its PR curve at each level ((101,) precision at ``RECALLS``), with the
    ``rules`` of ``diagnose``: ``difficult``, each of ``SIZES``, each of ``TRUNCATION`` where the split marks
    truncation, ``nothing`` where it has difficult objects."""
    label = ranked.label
    other_labels = [k for k in range(1, len(dataset.classes) + 1) if k != label and k not in similar_labels]
    # the type each detection would have as a false positive (its index in TYPES): loc, sim, oth, bg
    every_label = np.arange(len(dataset.classes) + 1)
    overlaps = [
        ranked.best_overlap(np.isin(every_label, labels))
        for labels in ([label], similar_labels, other_labels)
    ]
    kinds = np.select([overlap >= TOUCH for overlap in overlaps], [0, 1, 2], default=3)
    hit, counted = ranked.match(0.5, rules["difficult"])
    loose_hit, loose_counted = ranked.match(TOUCH, rules["difficult"])
    loose_false = loose_counted & ~loose_hit
    levels = {"c75": ranked.match(0.75, rules["difficult"]), "c50": (hit, counted)}
    for level, removed in (("loc", ()), ("sim", ("sim",)), ("oth", ("sim", "oth")), ("bg", TYPES)):
        dropped = loose_false & np.isin(kinds, [TYPES.index(kind) for kind in removed])
        levels[level] = (loose_hit, loose_counted & ~dropped)
    positives = rules["difficult"].positives[label]
    breakdown, curves = {}, {}
    for level, (level_hit, kept) in levels.items():
        matches = ClassMatches(ranked.images[kept], level_hit[kept], positives)
        breakdown[level], curves[level] = _scored(matches, metric)
    breakdown["fn"] = 1.0 if positives.any() else float("nan")
    curves["fn"] = np.ones(len(RECALLS))
    by_size = {}
    for size_index, size in enumerate(SIZES):
        ignored = rules[size]
        size_hit, size_counted = ranked.match(0.5, ignored)
        # COCO's rule: a false positive counts in its own box's size
        kept = size_counted & (size_hit | (ranked.sizes == size_index))
        by_size[size] = _scored(
            ClassMatches(ranked.images[kept], size_hit[kept], ignored.positives[label]), metric
        )[0]
    by_truncation = None
    if TRUNCATION[0] in rules:
        by_truncation = {}
        for kind in TRUNCATION:
            kind_hit, kind_counted = ranked.match(0.5, rules[kind])  # every false positive counts in both
            matches = ClassMatches(
                ranked.images[kind_counted], kind_hit[kind_counted], rules[kind].positives[label]
            )
            by_truncation[kind] = _scored(matches, metric)[0]
    difficult_counted = None
    if "nothing" in rules:
        all_hit, _ = ranked.match(0.5, rules["nothing"])
        every = ClassMatches(ranked.images, all_hit, rules["nothing"].positives[label])
        difficult_counted = _scored(every, metric)[0]
    outcomes = np.where(hit, -1, kinds)[counted]
    found = ClassDiagnosis(
        name, int(positives.sum()), outcomes, breakdown, by_size, by_truncation, difficult_counted
    )
    return found, curves


def _scored(matches: ClassMatches, metric: str) -> tuple[float, np.ndarray]:
    """(AP, precision (101,) at ``RECALLS`` under the precision envelope, as COCO samples it); NaN
    without positives."""
    if not matches.positives.any():
        return float("nan"), np.full(len(RECALLS), np.nan)
    recall, precision = matches.curve()
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    first = np.searchsorted(recall, RECALLS)  # the first point with recall >= r
    sampled = np.zeros(len(RECALLS))
    inside = first < len(recall)
    sampled[inside] = envelope[first[inside]]
    return float(average_precision(recall, precision, metric)), sampled


def _size_of(boxes: np.ndarray) -> np.ndarray:
    """(K, 4) boxes -> (K,) the index in ``SIZES`` of each one's area."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return np.where(areas < SMALL, 0, np.where(areas > LARGE, 2, 1))


def _summed(counts: Iterable[dict[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for found in counts:
        total.update(found)
    return {kind: total[kind] for kind in TYPES}


def _mean(values: Iterable[float]) -> float:
    """The mean of the values that are not NaN (NaN without any)."""
    kept = [v for v in values if not np.isnan(v)]
    return float(np.mean(kept)) if kept else float("nan")


def _finite(v: float) -> float | None:
    return None if np.isnan(v) else round(float(v), 6)
