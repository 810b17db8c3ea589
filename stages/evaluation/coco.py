"""COCO's detection metric, computed by pycocotools' ``COCOeval`` (the reference implementation that
published COCO numbers come from), not re-implemented: AP at IoU 0.50:0.95, AP50, AP75, AP of small,
medium and large objects, and AR at 1, 10 and 100 detections (and by size).

Ground truth: a COCO dataset's own annotation file, restricted to the split's images and classes (so
``area`` and ``iscrowd`` are COCO's own); any other dataset's boxes, with ``area`` the box's and difficult
objects as crowd regions (ignored, as the VOC protocol ignores difficult ones). Detections are matched to it
through the dataset's image and category ids (``ImageRecord.source_id``, ``Dataset.category_ids``).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
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
