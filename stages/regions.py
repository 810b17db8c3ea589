"""Labelling regions against ground truth: the overlaps every training stage samples from.

As in the R-CNN and Fast R-CNN releases, difficult objects are left out of training: a proposal on one is
judged only by its overlap with the other objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stages.geometry import box_iou
from stages.voc import ImageRecord


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

    @property
    def best_iou(self) -> np.ndarray:
        """(N,) IoU with the best-overlapping object (0 without objects)."""
        return self.class_iou.max(axis=1, initial=0.0)

    @property
    def best_labels(self) -> np.ndarray:
        """(N,) class of the best-overlapping object, 0 where the row overlaps none."""
        labels = self.class_iou.argmax(axis=1) + 1 if self.class_iou.shape[1] else np.zeros(len(self.boxes))
        return np.where(self.best_iou > 0, labels, 0).astype(np.int64)

    def labels_at(self, foreground_iou: float) -> np.ndarray:
        """(N,) the best object's class where its IoU >= ``foreground_iou``, else 0 (background)."""
        return np.where(self.best_iou >= foreground_iou, self.best_labels, 0)


def label_regions(record: ImageRecord, proposals: np.ndarray, num_classes: int) -> LabelledRegions:
    """Overlaps of ``record``'s non-difficult objects and ``proposals`` (K, 4) with those objects."""
    keep = ~record.difficult
    gt_boxes = record.boxes[keep].astype(np.float32).reshape(-1, 4)
    gt_labels = record.labels[keep].astype(np.int64)
    boxes = np.concatenate([gt_boxes, np.asarray(proposals, dtype=np.float32).reshape(-1, 4)])
    iou = box_iou(boxes, gt_boxes)  # (N, G)
    class_iou = np.zeros((len(boxes), num_classes), dtype=np.float32)
    for label in np.unique(gt_labels):
        class_iou[:, label - 1] = iou[:, gt_labels == label].max(axis=1)
    target_boxes = gt_boxes[iou.argmax(axis=1)] if len(gt_boxes) else boxes.copy()
    labels = np.concatenate([gt_labels, np.zeros(len(boxes) - len(gt_boxes), dtype=np.int64)])
    return LabelledRegions(boxes, labels, class_iou, target_boxes)
