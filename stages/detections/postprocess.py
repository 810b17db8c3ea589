"""From region scores to detections (torchvision's "postprocess" step), for every method.

R-CNN's and SPP-net's test (R-CNN section 2.2 and the release): per class, the 100 best-scoring proposals,
greedy NMS at IoU 0.3, then box regression of the survivors and NMS again. Fast R-CNN's (section 3):
every proposal's class-specific box first, then per class the 100 best, NMS at 0.3, and at most 100
detections an image. NMS is torchvision's ``batched_nms``: a box is suppressed when its IoU with a kept,
higher-scoring box of its class is > 0.3.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from stages.core.geometry import clip_boxes, decode_boxes


@dataclass(frozen=True)
class DetectOptions:
    """The test settings; ``score_thresh`` drops weaker detections (None keeps all), ``per_image`` keeps
    the best of an image (None: all; Fast R-CNN: 100)."""

    per_class: int = 100
    nms_iou: float = 0.3
    score_thresh: float | None = None
    per_image: int | None = None


@dataclass(frozen=True)
class ImageDetections:
    """One image's detections: boxes (K, 4), scores (K,), labels (K,) in 1..C."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


def nms_keep(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by per-class greedy NMS, best score first."""
    from torchvision.ops import batched_nms

    return batched_nms(
        torch.as_tensor(boxes, dtype=torch.float32),
        torch.as_tensor(scores, dtype=torch.float32),
        torch.as_tensor(labels, dtype=torch.int64),
        iou,
    ).numpy()


def detect_from_scores(
    boxes: np.ndarray,
    scores: np.ndarray,
    image_size: tuple[int, int],
    options: DetectOptions = DetectOptions(),
    regress: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> tuple[ImageDetections, ImageDetections | None]:
    """(N, 4) proposals and their (N, C) class scores -> detections without and with box regression.

    ``regress(rows (K,), labels (K,)) -> (K, 4)``: regression deltas of proposal rows for classes 1..C;
    without it the second result is None. ``image_size`` is (height, width), for clipping.
    """
    rows, labels, kept_scores = _best_per_class(scores, options)
    keep = nms_keep(boxes[rows], kept_scores, labels, options.nms_iou)
    rows, labels, kept_scores = rows[keep], labels[keep], kept_scores[keep]
    plain = ImageDetections(boxes[rows], kept_scores, labels)
    if regress is None:
        return plain, None
    moved = decode_boxes(torch.as_tensor(boxes[rows]), torch.as_tensor(regress(rows, labels))).numpy()
    moved = clip_boxes(moved, *image_size)
    again = nms_keep(moved, kept_scores, labels, options.nms_iou)
    return plain, ImageDetections(moved[again], kept_scores[again], labels[again])


def _best_per_class(scores: np.ndarray, options: DetectOptions) -> tuple[np.ndarray, ...]:
    """(N, C) scores -> rows, labels (1..C) and scores of each class's ``per_class`` best rows that pass
    ``score_thresh``."""
    num, classes = scores.shape
    k = min(options.per_class, num)
    rows = np.argsort(-scores, axis=0, kind="stable")[:k].T.reshape(-1)
    labels = np.repeat(np.arange(1, classes + 1), k)
    kept_scores = scores[rows, labels - 1]
    if options.score_thresh is not None:
        above = kept_scores >= options.score_thresh
        rows, labels, kept_scores = rows[above], labels[above], kept_scores[above]
    return rows, labels, kept_scores


def detect_from_class_boxes(
    class_boxes: np.ndarray, scores: np.ndarray, options: DetectOptions
) -> ImageDetections:
    """(N, C, 4) class-specific boxes and (N, C) scores -> detections: each class's best boxes, NMS, then
    the ``per_image`` best overall (Fast R-CNN's test)."""
    rows, labels, kept_scores = _best_per_class(scores, options)
    boxes = class_boxes[rows, labels - 1].reshape(-1, 4)
    keep = nms_keep(boxes, kept_scores, labels, options.nms_iou)[: options.per_image]
    return ImageDetections(boxes[keep], kept_scores[keep], labels[keep])
