"""Regions against ground truth: overlaps with each class's objects, and the matcher's labels against a
slow reference and torchvision's Matcher."""

from pathlib import Path

import numpy as np
import pytest
import torch

from stages.datasets.records import ImageRecord
from stages.training.matching import BACKGROUND, IGNORED, Matcher, label_regions


def record(boxes, labels, difficult=None) -> ImageRecord:
    boxes = np.array(boxes, np.float32).reshape(-1, 4)
    return ImageRecord(
        "img", Path("img.jpg"), 100, 100, boxes, np.array(labels, np.int64),
        np.array(difficult if difficult is not None else [False] * len(boxes)),
    )  # fmt: skip


def test_labels_overlaps_and_difficult_objects():
    r = record([[0, 0, 10, 10], [50, 50, 70, 70], [0, 0, 10, 9]], [1, 2, 2], difficult=[False, False, True])
    proposals = np.array([[0, 0, 10, 5], [50, 50, 70, 60], [80, 80, 90, 90]], np.float32)
    regions = label_regions(r, proposals, num_classes=3)
    assert regions.gt_labels.tolist() == [1, 2, 0, 0, 0]  # the difficult object is not a training box
    np.testing.assert_allclose(regions.class_iou[2], [0.5, 0.0, 0.0])
    np.testing.assert_allclose(regions.class_iou[3], [0.0, 0.5, 0.0])
    assert Matcher(0.5, (0.0, 0.5))(regions.class_iou).tolist() == [1, 2, 1, 2, 0]
    assert Matcher(0.6, (0.0, 0.6))(regions.class_iou).tolist() == [1, 2, 0, 0, 0]
    np.testing.assert_array_equal(regions.target_boxes[3], [50, 50, 70, 70])


def reference_labels(class_iou, foreground_iou, background_iou, strictly_above=False):
    """The matcher's rule, one row at a time."""
    labels = []
    for row in class_iou:
        best = max(row, default=0.0)
        is_foreground = best > foreground_iou if strictly_above else best >= foreground_iou
        if is_foreground:
            labels.append(int(np.argmax(row)) + 1)
        elif background_iou is not None and background_iou[0] <= best < background_iou[1]:
            labels.append(0)
        else:
            labels.append(-1)
    return labels


@pytest.mark.parametrize(
    "matcher",
    [
        Matcher(0.5, (0.0, 0.5)),
        Matcher(0.5, (0.1, 0.5)),
        Matcher(0.6, strictly_above=True),
        Matcher(0.3, (0.1, 0.7)),
    ],
)
def test_matcher_equals_the_reference(matcher):
    rng = np.random.default_rng(0)
    class_iou = rng.choice([0.0, 0.05, 0.1, 0.3, 0.49, 0.5, 0.6, 0.61, 0.9], size=(400, 3)).astype(np.float32)
    expected = reference_labels(
        class_iou, matcher.foreground_iou, matcher.background_iou, matcher.strictly_above
    )
    assert matcher(class_iou).tolist() == expected
    labels, foreground, background = matcher.split(class_iou)
    assert labels.tolist() == expected
    assert foreground.tolist() == [i for i, v in enumerate(expected) if v > 0]
    assert background.tolist() == [i for i, v in enumerate(expected) if v == 0]


def test_thresholds_are_inclusive_unless_strict():
    class_iou = np.array([[0.5], [0.1], [0.0999], [0.6]], np.float32)
    assert Matcher(0.5, (0.1, 0.5))(class_iou).tolist() == [1, BACKGROUND, IGNORED, 1]
    assert Matcher(0.6, strictly_above=True)(class_iou).tolist() == [IGNORED, IGNORED, IGNORED, IGNORED]
    assert Matcher(0.6)(class_iou).tolist() == [IGNORED, IGNORED, IGNORED, 1]


def test_matcher_agrees_with_torchvisions_on_objects():
    """torchvision's Matcher on a (objects x regions) IoU matrix: >= high is the best object's index,
    [low, high) is BETWEEN_THRESHOLDS (our background), < low is BELOW_LOW_THRESHOLD (ignored)."""
    from torchvision.models.detection._utils import Matcher as TorchvisionMatcher

    rng = np.random.default_rng(1)
    objects, regions, classes = 6, 300, 3
    iou = rng.uniform(0, 1, (objects, regions)).astype(np.float32) ** 3
    object_labels = rng.integers(1, classes + 1, objects)
    class_iou = np.zeros((regions, classes), np.float32)
    for label in range(1, classes + 1):
        if (object_labels == label).any():
            class_iou[:, label - 1] = iou[object_labels == label].max(axis=0)
    theirs = TorchvisionMatcher(0.5, 0.1)(torch.as_tensor(iou)).numpy()
    expected = np.where(
        theirs >= 0,
        object_labels[np.maximum(theirs, 0)],
        np.where(theirs == TorchvisionMatcher.BETWEEN_THRESHOLDS, BACKGROUND, IGNORED),
    )
    np.testing.assert_array_equal(Matcher(0.5, (0.1, 0.5))(class_iou), expected)
