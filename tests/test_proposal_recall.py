"""Recall against IoU and proposals an image (stages.proposals.recall), against a loop over objects that
computes each overlap by hand, and on cases whose recall is known."""

from pathlib import Path

import numpy as np
import pytest

from stages.datasets.records import Dataset, ImageRecord
from stages.proposals.recall import ALL, RECALL_IOUS, RecallCurves, recall_curves


def _record(image_id: str, boxes, difficult=None) -> ImageRecord:
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    flags = np.zeros(len(boxes), bool) if difficult is None else np.asarray(difficult, bool)
    return ImageRecord(
        image_id, Path(f"{image_id}.jpg"), 200, 200, boxes, np.ones(len(boxes), np.int64), flags
    )


def _dataset(*records: ImageRecord) -> Dataset:
    return Dataset(Path("."), "test", ("thing",), records, annotated=True)


def _slow_iou(a, b) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(width, 0.0) * max(height, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _slow_recall(dataset: Dataset, boxes, count, iou) -> float:
    """Each non-difficult object in turn: is any of the first ``count`` proposals of its image at ``iou``?"""
    found = total = 0
    for record in dataset.images:
        for box, difficult in zip(record.boxes, record.difficult, strict=True):
            if difficult:
                continue
            total += 1
            proposals = boxes[record.image_id] if count is None else boxes[record.image_id][:count]
            found += any(_slow_iou(box, proposal) >= iou for proposal in proposals)
    return found / total


def test_recall_matches_a_loop_over_objects():
    rng = np.random.default_rng(0)
    records, boxes = [], {}
    for index in range(6):
        corners = rng.uniform(0, 150, (5, 2))
        objects = np.concatenate([corners, corners + rng.uniform(10, 50, (5, 2))], axis=1)
        records.append(_record(f"im{index}", objects, rng.random(5) < 0.2))
        near = np.repeat(objects, 500, axis=0) + rng.normal(0, 6, (2500, 4))  # 2,500 proposals, some close
        boxes[f"im{index}"] = rng.permutation(near).astype(np.float32)
    dataset = _dataset(*records)
    curves = recall_curves(dataset, boxes, counts=(3, 30, 300))
    assert curves is not None and curves.ious == RECALL_IOUS
    assert curves.objects == sum(int((~r.difficult).sum()) for r in records)
    assert curves.boxes_per_image == 2500
    for key, count in (("3", 3), ("30", 30), ("300", 300), (ALL, None)):
        for iou, value in zip(curves.ious, curves.recall[key], strict=True):
            assert value == pytest.approx(_slow_recall(dataset, boxes, count, iou), abs=1e-9), (key, iou)
    for few, more in (("3", "30"), ("30", "300"), ("300", ALL)):  # more proposals never find fewer
        assert all(a <= b for a, b in zip(curves.recall[few], curves.recall[more], strict=True))
    assert curves.average("3") < curves.average(ALL)


def test_known_cases():
    """One object found exactly by the second proposal, one covered at IoU 0.64 by the first, one missed
    and one difficult: the top-1 recall finds the second object only, up to IoU 0.6."""
    image = _record("a", [[0, 0, 100, 100], [100, 100, 200, 200], [0, 150, 20, 170], [0, 0, 10, 10]])
    image = ImageRecord(**{**image.__dict__, "difficult": np.array([False, False, False, True])})
    proposals = {"a": np.array([[100, 100, 180, 180], [0, 0, 100, 100]], np.float32)}
    curves = recall_curves(_dataset(image, _record("empty", [])), proposals, counts=(1,))
    assert curves is not None and curves.objects == 3 and curves.boxes_per_image == 2
    assert curves.at(0.5, "1") == pytest.approx(1 / 3) and curves.at(0.6, "1") == pytest.approx(1 / 3)
    assert curves.at(0.65, "1") == 0.0
    assert curves.recall[ALL] == pytest.approx((2 / 3,) * 3 + (1 / 3,) * 7)
    assert RecallCurves.from_json(curves.to_json()).to_json() == curves.to_json()


def test_no_objects_no_curves():
    assert recall_curves(_dataset(_record("empty", [])), {"empty": np.zeros((3, 4), np.float32)}) is None
    assert recall_curves(_dataset(_record("a", [[0, 0, 9, 9]], [True])), {"a": np.zeros((0, 4))}) is None
