"""From scores to detections: top-k a class, per-class NMS at 0.3, box regression, clipping."""

import numpy as np
import pytest

from stages.detections.postprocess import DetectOptions, detect_from_class_boxes, detect_from_scores

BOXES = np.array(
    [[10, 10, 50, 50], [12, 12, 52, 52], [100, 100, 140, 140], [10, 10, 50, 50]], dtype=np.float32
)


def test_nms_is_per_class_and_keeps_the_best():
    scores = np.array([[0.9, 0.1], [0.8, 0.7], [0.5, -1.0], [0.1, 0.2]], np.float32)
    found, regressed = detect_from_scores(BOXES, scores, (200, 200), DetectOptions(per_class=4))
    assert regressed is None
    by_class = {c: sorted(np.flatnonzero(found.labels == c).tolist()) for c in (1, 2)}
    kept = {c: sorted(found.scores[found.labels == c].astype(float).round(3).tolist()) for c in (1, 2)}
    assert kept[1] == [0.5, 0.9]  # 0.8 and 0.1 overlap the 0.9 box (IoU > 0.3)
    assert kept[2] == [-1.0, 0.7]  # 0.2 overlaps 0.7; 0.1 overlaps 0.7
    assert sum(len(v) for v in by_class.values()) == len(found)


def test_top_k_and_threshold():
    scores = np.array([[3.0], [2.0], [1.0], [0.5]], np.float32)
    boxes = np.array([[i * 100, 0, i * 100 + 10, 10] for i in range(4)], np.float32)
    found, _ = detect_from_scores(boxes, scores, (500, 500), DetectOptions(per_class=2))
    assert found.scores.tolist() == [3.0, 2.0]
    found, _ = detect_from_scores(boxes, scores, (500, 500), DetectOptions(per_class=4, score_thresh=1.0))
    assert found.scores.tolist() == [3.0, 2.0, 1.0]


def test_box_regression_moves_clips_and_renms():
    scores = np.array([[0.9], [0.1], [0.8]], np.float32)
    boxes = np.array([[10, 10, 50, 50], [300, 300, 320, 320], [150, 150, 190, 190]], np.float32)
    seen = {}

    def regress(rows, labels):
        seen["rows"], seen["labels"] = rows.tolist(), labels.tolist()
        deltas = np.zeros((len(rows), 4), np.float32)
        deltas[rows == 2, :2] = -3.5  # moves box 2 onto box 0's place: the second NMS removes it
        deltas[rows == 1, 0] = 10.0  # pushes box 1 off the image's right edge: clipped
        return deltas

    plain, moved = detect_from_scores(boxes, scores, (400, 330), DetectOptions(per_class=3), regress)
    assert sorted(seen["rows"]) == [0, 1, 2] and seen["labels"] == [1, 1, 1]
    assert len(plain) == 3 and len(moved) == 2
    assert moved.scores.tolist() == [np.float32(0.9), np.float32(0.1)]
    assert moved.boxes[:, 2].max() <= 330


def test_class_boxes_detection_is_per_class_nms_then_per_image_cap():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    class_boxes = np.stack([boxes, boxes + 100], axis=1)  # (3, 2, 4): class 2's boxes elsewhere
    scores = np.array([[0.9, 0.1], [0.8, 0.7], [0.2, 0.6]])
    found = detect_from_class_boxes(class_boxes, scores, DetectOptions(per_image=100))
    assert sorted(zip(found.labels.tolist(), found.scores.round(2).tolist(), strict=True)) == [
        (1, 0.2), (1, 0.9), (2, 0.6), (2, 0.7),
    ]  # fmt: skip
    np.testing.assert_allclose(found.boxes[found.labels == 2], class_boxes[[1, 2], 1])
    capped = detect_from_class_boxes(class_boxes, scores, DetectOptions(per_image=2))
    assert capped.scores.tolist() == pytest.approx([0.9, 0.7])
