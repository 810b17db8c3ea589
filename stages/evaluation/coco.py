"""COCO's detection metric, computed by pycocotools' ``COCOeval`` (the reference implementation that
published COCO numbers come from), not re-implemented: AP at IoU 0.50:0.95, AP50, AP75, AP of small,
medium and large objects, and AR at 1, 10 and 100 detections (and by size).

Ground truth: a COCO dataset's own annotation file, restricted to the split's images and classes (so
``area`` and ``iscrowd`` are COCO's own); any other dataset's boxes, with ``area`` the box's and difficult
objects as crowd regions (ignored, as the VOC protocol ignores difficult ones). Detections are matched to it
through the dataset's image and category ids (``ImageRecord.source_id``, ``Dataset.category_ids``).

Each category's matches (``CocoMatches``) are kept from COCOeval's per-image records, so that its AP can be
accumulated again with the images reweighted (a bootstrap draw, ``stages.evaluation.bootstrap``) without
matching again.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stages.datasets.coco import read_json
from stages.datasets.records import Dataset
from stages.detections.files import Detections

SUMMARY = (
    "ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large",
    "ar1", "ar10", "ar100", "ar_small", "ar_medium", "ar_large",
)  # fmt: skip
"""COCOeval.stats in its order; ``ap`` (IoU 0.50:0.95) is the headline."""


def category_ids(dataset: Dataset) -> tuple[int, ...]:
    """The dataset's id of each class: COCO's own, else 1..C."""
    return dataset.category_ids or tuple(range(1, len(dataset.classes) + 1))


def image_ids(dataset: Dataset) -> dict[str, int]:
    """Image id (stem) -> the numeric id COCO files use: COCO's own, else the image's place, from 1."""
    return {
        r.image_id: r.source_id if isinstance(r.source_id, int) else number
        for number, r in enumerate(dataset.images, start=1)
    }


def ground_truth(dataset: Dataset) -> dict[str, Any]:
    """The split as a COCO annotation dict: from the dataset's own file for COCO datasets."""
    ids, categories = image_ids(dataset), category_ids(dataset)
    if dataset.format == "coco" and dataset.source is not None:
        content = read_json(dataset.source)
        wanted_images, wanted_categories = set(ids.values()), set(categories)
        return {
            "images": [i for i in content["images"] if i["id"] in wanted_images],
            "annotations": [  # copies: COCOeval marks the ones it ignores, and the file is shared
                dict(a)
                for a in content["annotations"]
                if a["image_id"] in wanted_images and a["category_id"] in wanted_categories
            ],
            "categories": [c for c in content["categories"] if c["id"] in wanted_categories],
        }
    annotations: list[dict[str, Any]] = []
    for record in dataset.images:
        for box, label, difficult in zip(record.boxes, record.labels, record.difficult, strict=True):
            x1, y1, x2, y2 = (float(v) for v in box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": ids[record.image_id],
                    "category_id": categories[label - 1],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": int(difficult),
                }
            )
    return {
        "images": [{"id": ids[r.image_id], "width": r.width, "height": r.height} for r in dataset.images],
        "annotations": annotations,
        "categories": [{"id": i, "name": n} for i, n in zip(categories, dataset.classes, strict=True)],
    }


def results(dataset: Dataset, detections: Detections) -> list[dict[str, Any]]:
    """``detections`` as a COCO results list (``image_id``, ``category_id``, ``bbox`` [x, y, w, h],
    ``score``), as ``COCO.loadRes`` reads it; detections on images outside the split are left out."""
    ids = image_ids(dataset)
    category_of = dict(zip(dataset.classes, category_ids(dataset), strict=True))
    found = []
    for image_id, name, score, box in zip(
        detections.image_ids, detections.classes, detections.scores, detections.boxes, strict=True
    ):
        if image_id in ids:
            x1, y1, x2, y2 = (float(v) for v in box)
            found.append(
                {
                    "image_id": ids[image_id],
                    "category_id": category_of[name],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": float(score),
                }
            )
    return found


def coco_evaluate(dataset: Dataset, detections: Detections, classes: Sequence[str] | None = None):
    """Run COCOeval (bbox) on the split, over ``classes`` (default: all): the finished evaluator, or None
    when there is no detection (pycocotools cannot load an empty result list)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    found = results(dataset, detections)
    ids = sorted(image_ids(dataset).values())
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        truth = COCO()
        truth.dataset = ground_truth(dataset)
        truth.createIndex()
        if not found:
            return None
        evaluator = COCOeval(truth, truth.loadRes(found), "bbox")
        evaluator.params.imgIds = ids
        category_of = dict(zip(dataset.classes, category_ids(dataset), strict=True))
        evaluator.params.catIds = [category_of[name] for name in (classes or dataset.classes)]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def class_results(evaluator) -> dict[int, tuple[float, np.ndarray, np.ndarray]]:
    """Category id -> (AP at IoU 0.50:0.95, recall thresholds, precision at IoU 0.5) for all areas and
    100 detections; AP is NaN for a category without ground truth. Keyed by id because COCOeval orders
    its results by sorted category id, not by the order it was given them in."""
    precision = evaluator.eval["precision"]  # (IoU thresholds, recall thresholds, classes, areas, max dets)
    recall_points = np.asarray(evaluator.params.recThrs)
    found = {}
    for k, category in enumerate(evaluator.params.catIds):
        table = precision[:, :, k, 0, -1]
        valid = table[table > -1]
        ap = float(valid.mean()) if valid.size else float("nan")
        found[int(category)] = (ap, recall_points, np.clip(table[0], 0, None))
    return found


@dataclass(frozen=True)
class CocoMatches:
    """One category's detections as COCOeval matched them (all areas, up to 100 an image), ranked as its
    accumulation ranks them (best score first, ties in COCOeval's image order): the index of each one's
    image in the split (K,), and at each IoU threshold whether it is a hit (T, K) and whether it counts
    (T, K) (not on a crowd region); the category's objects that count in each image of the split (N,);
    and COCOeval's recall thresholds (R,)."""

    images: np.ndarray
    hit: np.ndarray
    counted: np.ndarray
    positives: np.ndarray
    recall_points: np.ndarray

    def average_precision(self, weights: np.ndarray | None = None) -> np.ndarray:
        """AP at IoU 0.50:0.95 as ``COCOeval.accumulate`` finds it, with each image counted ``weights``
        (N,) times (a bootstrap resample; default once): a repeated image's detections and objects count
        as many times. With a stack of weights (B, N), (B,); NaN without positives."""
        counts = np.ones(len(self.positives)) if weights is None else np.asarray(weights, np.float64)
        stack = counts.reshape(-1, len(self.positives))  # (B, N)
        each = stack[:, None, self.images]  # (B, 1, K)
        tp = np.cumsum(each * self.hit, axis=-1)  # (B, T, K)
        fp = np.cumsum(each * (self.counted & ~self.hit), axis=-1)
        positives = (stack @ self.positives)[:, None, None]
        recall = np.divide(tp, positives, out=np.zeros(tp.shape), where=positives > 0)
        # COCO's interpolation: at each recall threshold, the best precision at that recall or beyond, 0
        # past the curve's end
        envelope = np.maximum.accumulate((tp / (fp + tp + np.spacing(1)))[..., ::-1], axis=-1)[..., ::-1]
        envelope = np.concatenate([envelope, np.zeros((*tp.shape[:-1], 1))], axis=-1)
        points = np.take_along_axis(envelope, self._first_at(recall), axis=-1)  # (B, T, R)
        ap = np.where(positives[:, 0, 0] > 0, points.mean(axis=(1, 2)), np.nan)
        return ap.reshape(counts.shape[:-1])

    def _first_at(self, recall: np.ndarray) -> np.ndarray:
        """For each curve (B, T, K) (non-decreasing) and recall threshold, the first point at or above it,
        K where none is (B, T, R): ``np.searchsorted(curve, recall_points)`` for every curve at once, as
        the count of points that reach fewer thresholds."""
        rows = recall.reshape(-1, recall.shape[-1])
        width = len(self.recall_points) + 1
        reached = np.searchsorted(self.recall_points, rows, side="right")  # thresholds at or below: 0..R
        cells = (reached + width * np.arange(len(rows))[:, None]).ravel()
        below = np.bincount(cells, minlength=width * len(rows)).reshape(len(rows), width).cumsum(axis=1)
        return below[:, :-1].reshape(*recall.shape[:-1], width - 1)


def category_matches(evaluator, dataset: Dataset) -> dict[int, CocoMatches]:
    """Category id -> its ``CocoMatches``, from the per-image records of a finished COCOeval on the
    split (all areas, its largest number of detections, 100); images in the split's order, as weights
    follow."""
    params = evaluator.params
    place = {image: i for i, image in enumerate(image_ids(dataset).values())}
    evaluated, thresholds = [place[int(image)] for image in params.imgIds], len(params.iouThrs)
    area = params.areaRngLbl.index("all")
    found = {}
    for k, category in enumerate(params.catIds):
        start = (k * len(params.areaRng) + area) * len(evaluated)  # evalImgs: category x area x image
        block = evaluator.evalImgs[start : start + len(evaluated)]
        kept = [(i, e) for i, e in zip(evaluated, block, strict=True) if e is not None]
        scores = _joined([e["dtScores"] for _, e in kept], (0,))
        order = np.argsort(-scores, kind="mergesort")  # as accumulate sorts: stable, so ties in image order
        ranked_images = _joined([np.full(len(e["dtScores"]), i) for i, e in kept], (0,)).astype(np.int64)
        matched = _joined([e["dtMatches"] for _, e in kept], (thresholds, 0)) != 0
        ignored = _joined([e["dtIgnore"] for _, e in kept], (thresholds, 0)) != 0
        positives = np.zeros(len(place), dtype=np.int64)
        for i, e in kept:
            positives[i] = np.count_nonzero(e["gtIgnore"] == 0)
        found[int(category)] = CocoMatches(
            ranked_images[order],
            (matched & ~ignored)[:, order],
            ~ignored[:, order],
            positives,
            np.asarray(params.recThrs, dtype=np.float64),
        )
    return found


def _joined(parts: list, empty: tuple[int, ...]) -> np.ndarray:
    """Per-image arrays side by side along their last axis (detections); zeros of shape ``empty`` when
    there are none."""
    return np.concatenate(parts, axis=-1) if parts else np.zeros(empty)
