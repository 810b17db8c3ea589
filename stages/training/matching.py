"""Regions against ground truth: their overlaps with each class's objects, and the one rule that turns an
overlap into a training label.

- ``label_regions``: one image's ground truths and proposals, with each row's best IoU with the objects of
  every class (``class_iou``) and the object it overlaps most (``target_boxes``, for box regression);
  ``label_boxes`` the same for any objects and boxes (Faster R-CNN's, on the scaled image).
- ``Matcher``: ``class_iou`` -> foreground class, background or ignored, thresholds as parameters: R-CNN's
  fine-tuning (IoU >= 0.5 foreground, the rest background; section 2.3), SPP-net's and Fast R-CNN's
  (background only in [0.1, 0.5); SPP-net 4.1, Fast R-CNN 2.3) and box regression's (IoU > 0.6, no
  background; R-CNN appendix C) are three instances of it, and the region proposal network's anchors
  (IoU > 0.7 positive, below 0.3 negative; Faster R-CNN 3.1.2) a fourth, with ``best_of_each_object``.

As in the R-CNN and Fast R-CNN releases, difficult objects are left out of training: a proposal on one is
judged only by its overlap with the other objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from stages.core.geometry import box_iou
from stages.datasets.records import Dataset, ImageRecord

IGNORED = -1
BACKGROUND = 0


@dataclass(frozen=True)
class LabelledRegions:
    """One image's regions, ground truths first, then proposals (N rows).

    boxes (N, 4) float32; gt_labels (N,) int64: the class of a ground-truth row, 0 for proposals;
    class_iou (N, C) float32: best IoU with the objects of each class; target_boxes (N, 4): the object
    with the best IoU (the row's own box when the image has no objects).
    """

    boxes: np.ndarray
    gt_labels: np.ndarray
    class_iou: np.ndarray
    target_boxes: np.ndarray


def label_regions(record: ImageRecord, proposals: np.ndarray, num_classes: int) -> LabelledRegions:
    """Overlaps of ``record``'s non-difficult objects and ``proposals`` (K, 4) with those objects."""
    keep = ~record.difficult
    return label_boxes(record.boxes[keep], record.labels[keep], proposals, num_classes)


def label_boxes(
    gt_boxes: np.ndarray, gt_labels: np.ndarray, proposals: np.ndarray, num_classes: int
) -> LabelledRegions:
    """The objects (G, 4) of classes ``gt_labels`` (G,) in 1..C, then ``proposals`` (K, 4), with each
    row's overlaps with the objects."""
    gt_boxes = np.asarray(gt_boxes, dtype=np.float32).reshape(-1, 4)
    gt_labels = np.asarray(gt_labels).astype(np.int64)
    boxes = np.concatenate([gt_boxes, np.asarray(proposals, dtype=np.float32).reshape(-1, 4)])
    iou = box_iou(boxes, gt_boxes)  # (N, G)
    class_iou = np.zeros((len(boxes), num_classes), dtype=np.float32)
    for label in np.unique(gt_labels):
        class_iou[:, label - 1] = iou[:, gt_labels == label].max(axis=1)
    target_boxes = gt_boxes[iou.argmax(axis=1)] if len(gt_boxes) else boxes.copy()
    labels = np.concatenate([gt_labels, np.zeros(len(boxes) - len(gt_boxes), dtype=np.int64)])
    return LabelledRegions(boxes, labels, class_iou, target_boxes)


def label_split(dataset: Dataset, proposals: Mapping[str, np.ndarray]) -> list[LabelledRegions]:
    """Every image's ground truth and proposals with their overlaps, in split order."""
    return [label_regions(r, proposals[r.image_id], len(dataset.classes)) for r in dataset.images]


@dataclass(frozen=True)
class Matcher:
    """A region's training label from its best overlap with an object.

    best IoU >= ``foreground_iou`` (> with ``strictly_above``): the class of that object (1..C);
    best IoU in [``background_iou[0]``, ``background_iou[1]``): background (0); otherwise ignored (-1).
    ``background_iou`` None: no background, everything below the foreground threshold is ignored.
    """

    foreground_iou: float
    background_iou: tuple[float, float] | None = None
    strictly_above: bool = False

    def __call__(self, class_iou: np.ndarray) -> np.ndarray:
        """(N, C) best IoU with each class's objects -> (N,) int64 labels: 1..C, 0 background, -1 ignored."""
        best = class_iou.max(axis=1, initial=0.0)
        foreground = best > self.foreground_iou if self.strictly_above else best >= self.foreground_iou
        labels = np.full(len(best), IGNORED, dtype=np.int64)
        if self.background_iou is not None:
            low, high = self.background_iou
            labels[(best >= low) & (best < high) & ~foreground] = BACKGROUND
        if class_iou.shape[1]:
            labels[foreground] = class_iou[foreground].argmax(axis=1) + 1
        return labels

    def split(self, class_iou: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(labels (N,), foreground rows, background rows) of (N, C) ``class_iou``."""
        labels = self(class_iou)
        return labels, np.flatnonzero(labels > 0), np.flatnonzero(labels == BACKGROUND)


def best_of_each_object(iou: np.ndarray) -> np.ndarray:
    """The rows of (N, G) ``iou`` that overlap some object the most of all rows, ties included: Faster
    R-CNN's second rule for a positive anchor (section 3.1.2), which gives every object one even when no
    anchor passes the IoU threshold. An object no row overlaps at all makes none."""
    if not iou.size:
        return np.zeros(0, dtype=np.int64)
    best = iou.max(axis=0)
    return np.flatnonzero(((iou == best) & (best > 0)).any(axis=1))
