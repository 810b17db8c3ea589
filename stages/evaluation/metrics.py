"""VOC detection evaluation (Everingham et al., IJCV 2010; the devkit's VOCevaldet).

Per class: detections sorted by score, each matched greedily to the unmatched ground truth of its class
and image with the highest IoU; a hit needs IoU >= 0.5. Difficult ground truths are ignored: a detection
matched to one is neither a hit nor a miss, and they do not count as positives. AP is the VOC2007
11-point interpolated mean (``voc07``) or the area under the monotone precision envelope (``voc10``).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stages.core.atomic import atomic_path, write_json
from stages.core.errors import UserError
from stages.core.geometry import box_iou
from stages.datasets.records import Dataset
from stages.detections.files import Detections

if TYPE_CHECKING:
    from stages.evaluation.coco import CocoMatches

log = logging.getLogger("rcnn")

METRICS = ("voc07", "voc10", "coco")
"""VOC2007's 11-point interpolated AP, VOC2010's area under the precision envelope, and COCO's AP at IoU
0.50:0.95 with its eleven companions (``stages.evaluation.coco``, by pycocotools)."""


def default_metric(dataset_format: str) -> str:
    """COCO's metric for a dataset in COCO's layout, VOC2007's for the others."""
    return "coco" if dataset_format == "coco" else "voc07"


@dataclass(frozen=True)
class ClassResult:
    """One class: AP (NaN without positives), positives, detections, and the PR curve (D,) arrays; also
    its detections' ``matches``, from which a bootstrap draws (``stages.evaluation.bootstrap``): VOC's
    (``ClassMatches``), or COCOeval's (``CocoMatches``) for a class it scored."""

    name: str
    ap: float
    positives: int
    detections: int
    recall: np.ndarray
    precision: np.ndarray
    matches: ClassMatches | CocoMatches | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Evaluation:
    """Per-class results and their mean over the classes that have positives, less the ``untrained``."""

    metric: str
    iou_threshold: float
    classes: tuple[ClassResult, ...]
    summary: dict[str, float] | None = None
    """The COCO metric's twelve numbers (``coco_metric.SUMMARY``); None for the VOC metrics."""
    untrained: tuple[str, ...] = ()
    """Classes the detector had no object of to learn from: scored, but reported apart from the mAP."""

    @property
    def map(self) -> float:
        """The headline: mean AP over the trained classes with positives (for ``coco``: AP at IoU
        0.50:0.95 over the trained classes)."""
        if self.summary is not None:
            return self.summary["ap"]
        aps = [c.ap for c in self.classes if not np.isnan(c.ap) and c.name not in self.untrained]
        return float(np.mean(aps)) if aps else float("nan")

    def to_json(self) -> dict:
        """``{"metric", "map", "ap": {class: ap}}`` (NaN written as null), plus counts per class."""

        def finite(v: float) -> float | None:
            return None if np.isnan(v) else round(float(v), 6)

        return {
            "metric": self.metric,
            "iou_threshold": self.iou_threshold,
            "map": finite(self.map),
            "ap": {c.name: finite(c.ap) for c in self.classes},
            "positives": {c.name: c.positives for c in self.classes},
            "detections": {c.name: c.detections for c in self.classes},
            **({"coco": {k: finite(v) for k, v in self.summary.items()}} if self.summary is not None else {}),
            **({"untrained_classes": list(self.untrained)} if self.untrained else {}),
        }


def average_precision(recall: np.ndarray, precision: np.ndarray, metric: str = "voc07") -> Any:
    """AP from a PR curve (recall non-decreasing), or from a stack of them along the last axis (B, K) ->
    (B,). voc07: mean of the best precision at recall >= t for t in 0, 0.1, ..., 1; voc10: area under
    the precision envelope."""
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if recall.ndim > 1:
        if metric == "voc07":  # the best precision at recall >= t: the envelope at the first such point
            envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
            thresholds = np.linspace(0, 1, 11)
            points = np.zeros((len(recall), len(thresholds)))
            for row, (curve, best) in enumerate(zip(recall, envelope, strict=True)):
                first = np.searchsorted(curve, thresholds)
                inside = first < len(curve)
                points[row, inside] = best[first[inside]]
            return points.mean(axis=-1)
        return np.array([average_precision(r, p, metric) for r, p in zip(recall, precision, strict=True)])
    if metric == "voc07":
        return float(np.mean([precision[recall >= t].max(initial=0.0) for t in np.linspace(0, 1, 11)]))
    if metric == "voc10":
        r = np.concatenate([[0.0], recall, [1.0]])
        p = np.concatenate([[0.0], precision, [0.0]])
        envelope = np.maximum.accumulate(p[::-1])[::-1]
        steps = np.flatnonzero(r[1:] != r[:-1]) + 1
        return float(np.sum((r[steps] - r[steps - 1]) * envelope[steps]))
    raise UserError(f"--metric {metric!r}: choose {', '.join(METRICS)}")


@dataclass(frozen=True)
class ClassMatches:
    """One class's detections matched to its objects: for each detection that counts (not on a difficult
    object), best score first, the index of its image in the split (K,) and whether it is a hit (K,);
    and the class's non-difficult objects in each image of the split (N,)."""

    images: np.ndarray
    hit: np.ndarray
    positives: np.ndarray

    def curve(self, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(recall (K,), precision (K,)), with each image counted ``weights`` (N,) times (a bootstrap
        resample; default once): a repeated image's detections and objects count as many times. With a
        stack of weights (B, N), a stack of curves (B, K); a curve without positives has NaN recall."""
        counts = np.ones(len(self.positives)) if weights is None else np.asarray(weights, np.float64)
        each = counts[..., self.images]
        tp = np.cumsum(each * self.hit, axis=-1)
        fp = np.cumsum(each * ~self.hit, axis=-1)
        positives = np.asarray(counts @ self.positives, dtype=np.float64)[..., None]
        recall = np.divide(tp, positives, out=np.full(tp.shape, np.nan), where=positives > 0)
        return recall, tp / np.maximum(tp + fp, np.finfo(np.float64).eps)


def class_matches(dataset: Dataset, detections: Detections, iou_threshold: float = 0.5) -> list[ClassMatches]:
    """Every class's detections on the split's images matched greedily to its objects (VOC's rule),
    in the order of ``dataset.classes``."""
    position = {r.image_id: i for i, r in enumerate(dataset.images)}
    in_split = np.isin(detections.image_ids, list(position))
    found = []
    for label, name in enumerate(dataset.classes, start=1):
        mine = in_split & (detections.classes == name)
        image_ids, scores, boxes = detections.image_ids[mine], detections.scores[mine], detections.boxes[mine]
        order = np.argsort(-scores, kind="stable")
        hit, counted = _match_ranked(dataset, label, image_ids[order], boxes[order], iou_threshold)
        ranked_images = np.array([position[i] for i in image_ids[order][counted]], dtype=np.int64)
        positives = np.array([int((~r.difficult[r.labels == label]).sum()) for r in dataset.images])
        found.append(ClassMatches(ranked_images, hit[counted], positives))
    return found


def _match_ranked(
    dataset: Dataset, label: int, image_ids: np.ndarray, boxes: np.ndarray, iou_threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching of one class's detections, best first: (hit (D,), counted (D,) bool)."""
    gt = {r.image_id: (r.boxes[r.labels == label], r.difficult[r.labels == label]) for r in dataset.images}
    hit = np.zeros(len(image_ids), dtype=bool)
    counted = np.ones(len(image_ids), dtype=bool)
    by_image: dict[str, list[int]] = {}
    for rank, image_id in enumerate(image_ids.tolist()):
        by_image.setdefault(image_id, []).append(rank)
    for image_id, ranks in by_image.items():  # one IoU matrix an image
        objects, difficult = gt[image_id]
        hit[ranks], counted[ranks] = match_greedy(box_iou(boxes[ranks], objects), difficult, iou_threshold)
    return hit, counted


def match_greedy(
    ious: np.ndarray, ignored: np.ndarray, iou_threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """VOC's rule in one image, from the IoU matrix (D, K) of one class's detections (best score first)
    and its objects: each detection goes to its best-overlap object; at IoU >= ``iou_threshold`` it is a
    hit if that object is free, neither hit nor miss if the object is ``ignored`` (K,) (difficult), else
    a false positive, as is one below the threshold. (hit (D,), counted (D,) bool)."""
    hit = np.zeros(len(ious), dtype=bool)
    counted = np.ones(len(ious), dtype=bool)
    if not ious.shape[1]:
        return hit, counted
    taken = np.zeros(ious.shape[1], dtype=bool)
    best = ious.argmax(axis=1)
    matched = ious[np.arange(len(ious)), best] >= iou_threshold
    for rank, obj in zip(np.flatnonzero(matched).tolist(), best[matched].tolist(), strict=True):
        if ignored[obj]:
            counted[rank] = False
        elif not taken[obj]:
            taken[obj] = True
            hit[rank] = True
    return hit, counted


def evaluate(
    dataset: Dataset,
    detections: Detections,
    metric: str | None = None,
    iou_threshold: float = 0.5,
    untrained: Sequence[str] = (),
) -> Evaluation:
    """Evaluate ``detections`` on the annotated ``dataset``; classes must be the dataset's. ``metric``
    defaults to the dataset's own (``default_metric``); ``iou_threshold`` is the VOC metrics'. The
    ``untrained`` classes (none of their objects in the training split) are scored but left out of
    the mAP: a detector cannot learn them, and their AP would measure nothing but chance."""
    untrained = tuple(name for name in dataset.classes if name in set(untrained))
    metric = metric or default_metric(dataset.format)
    if not dataset.annotated:
        raise UserError(f"{dataset.root}: split {dataset.split!r} has no annotations to evaluate on")
    if metric not in METRICS:
        raise UserError(f"--metric {metric!r}: choose {', '.join(METRICS)}")
    check_classes(dataset, detections)
    in_split = np.isin(detections.image_ids, [r.image_id for r in dataset.images])
    if not in_split.all():
        outside = Counter(detections.image_ids[~in_split].tolist())
        log.warning(
            "ignored %d detections on %d images outside split %r (first: %s)",
            int((~in_split).sum()),
            len(outside),
            dataset.split,
            next(iter(outside)),
        )
    if metric == "coco":
        return _coco(dataset, detections, untrained)
    results = []
    for name, matches in zip(dataset.classes, class_matches(dataset, detections, iou_threshold), strict=True):
        recall, precision = matches.curve()
        positives = int(matches.positives.sum())
        ap = average_precision(recall, precision, metric) if positives else float("nan")
        count = int((in_split & (detections.classes == name)).sum())
        results.append(ClassResult(name, ap, positives, count, recall, precision, matches))
    return Evaluation(metric, iou_threshold, tuple(results), untrained=untrained)


def check_classes(dataset: Dataset, detections: Detections) -> None:
    """UserError unless every detection names a class of the dataset."""
    unknown = sorted(set(detections.classes.tolist()) - set(dataset.classes))
    if unknown:
        raise UserError(
            f"detections name classes the dataset does not have: {', '.join(unknown)} "
            f"(dataset classes: {', '.join(dataset.classes)})"
        )


def _coco(dataset: Dataset, detections: Detections, untrained: tuple[str, ...]) -> Evaluation:
    """COCO's metric by pycocotools over the trained classes; per class, AP at IoU 0.50:0.95 and the PR
    curve at IoU 0.5, and COCOeval's matches (the untrained classes: their counts, no AP)."""
    from stages.evaluation.coco import SUMMARY, category_ids, category_matches, class_results, coco_evaluate

    trained = [name for name in dataset.classes if name not in untrained]
    evaluator = coco_evaluate(dataset, detections, trained)
    found = class_results(evaluator) if evaluator is not None else {}
    matches = category_matches(evaluator, dataset) if evaluator is not None else {}
    category_of = dict(zip(dataset.classes, category_ids(dataset), strict=True))
    per_class = {name: found[category_of[name]] for name in trained if category_of[name] in found}
    positives_of = dataset.object_counts()
    results = []
    for name in dataset.classes:
        positives = positives_of[name]
        count = int((detections.classes == name).sum())
        if name not in per_class:
            ap = 0.0 if positives and evaluator is None and name not in untrained else float("nan")
            results.append(ClassResult(name, ap, positives, count, np.zeros(0), np.zeros(0)))
            continue
        ap, recall, precision = per_class[name]
        results.append(ClassResult(name, ap, positives, count, recall, precision, matches[category_of[name]]))
    stats = evaluator.stats if evaluator is not None else np.zeros(len(SUMMARY))
    # COCOeval writes -1 where a figure is undefined (no ground truth of that size): NaN, null in the JSON
    summary = {k: float("nan") if v < 0 else float(v) for k, v in zip(SUMMARY, stats, strict=True)}
    return Evaluation("coco", 0.5, tuple(results), summary, untrained)


def save_evaluation(
    evaluation: Evaluation, json_path: Path | None, plot_path: Path | None, extra: Mapping[str, Any] = {}
) -> None:
    """Write the results JSON (with ``extra`` fields) and the PR curves PNG (either may be None),
    atomically."""
    if json_path is not None:
        write_json(json_path, {**evaluation.to_json(), **extra})
    if plot_path is not None:
        plot_pr_curves(evaluation, plot_path)


def plot_pr_curves(evaluation: Evaluation, path: Path) -> None:
    """One PNG with every class's precision-recall curve, AP in the legend."""
    from stages.core.plotting import drawing

    with drawing(c.name for c in evaluation.classes) as plt:
        fig, ax = plt.subplots(figsize=(7, 5.5), dpi=110)
        cmap = plt.get_cmap("tab20")
        for i, result in enumerate(evaluation.classes):
            if result.positives and len(result.recall):
                ax.plot(
                    result.recall,
                    result.precision,
                    color=cmap(i % 20),
                    lw=1.5,
                    label=f"{result.name} ({result.ap:.3f})",
                )
        title = f"PR curves at IoU {evaluation.iou_threshold:g}; {evaluation.metric} mAP {evaluation.map:.3f}"
        ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="lower left", ncol=2)
        fig.tight_layout()
        with atomic_path(Path(path)) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
