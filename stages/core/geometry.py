"""Boxes: the one pixel convention of the toolkit, conversions at the edges, and box coding.

Convention: a box is a float tensor (or array) row (x1, y1, x2, y2) in *continuous, 0-based* image
coordinates, where pixel column i covers [i, i + 1). So width = x2 - x1, as in torchvision and COCO.

A VOC box (1-based inclusive pixels, width xmax - xmin + 1) maps to (xmin - 1, ymin - 1, xmax, ymax):
widths and areas are then the devkit's, and ``torchvision.ops.box_iou`` equals the devkit's overlap.
This conversion is done once, when annotations or precomputed proposals are read.
"""

from __future__ import annotations

import numpy as np
import torch


def voc_to_boxes(voc: np.ndarray) -> np.ndarray:
    """(K, 4) VOC 1-based inclusive (xmin, ymin, xmax, ymax) -> (K, 4) float32 toolkit boxes."""
    boxes = np.asarray(voc, dtype=np.float32).reshape(-1, 4).copy()
    boxes[:, :2] -= 1.0
    return boxes


def boxes_to_voc(boxes: np.ndarray) -> np.ndarray:
    """(K, 4) toolkit boxes -> (K, 4) float32 VOC 1-based inclusive boxes; the inverse of voc_to_boxes."""
    voc = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    voc[:, :2] += 1.0
    return voc


def xywh_to_boxes(rects: np.ndarray) -> np.ndarray:
    """(K, 4) (x, y, w, h) integer pixel rectangles (OpenCV) -> (K, 4) float32 toolkit boxes."""
    rects = np.asarray(rects, dtype=np.float32).reshape(-1, 4)
    return np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)


def clip_boxes(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """(K, 4) boxes clipped to the image [0, width] x [0, height]; returns a new float32 array."""
    clipped = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    clipped[:, 0::2] = clipped[:, 0::2].clip(0, width)
    clipped[:, 1::2] = clipped[:, 1::2].clip(0, height)
    return clipped


def flip_boxes(boxes: np.ndarray, width: int) -> np.ndarray:
    """(K, 4) boxes of an image ``width`` wide, mirrored left to right."""
    return np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], axis=1)


def nonempty(boxes: np.ndarray) -> np.ndarray:
    """(K,) bool: boxes with positive width and height."""
    boxes = np.asarray(boxes).reshape(-1, 4)
    return (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])


def first_unique(boxes: np.ndarray) -> np.ndarray:
    """(K,) int64 indices of the first occurrence of every distinct row, in their original order.

    Selective search ranks its boxes, so deduplication keeps the order it gave.
    """
    boxes = np.ascontiguousarray(np.asarray(boxes).reshape(-1, 4))
    _, first = np.unique(boxes, axis=0, return_index=True)
    return np.sort(first)


def box_iou(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> np.ndarray:
    """(N, 4), (M, 4) boxes -> (N, M) float32 IoU matrix (torchvision's, in our convention)."""
    from torchvision.ops import box_iou as tv_box_iou

    a_t = torch.as_tensor(np.asarray(a, dtype=np.float32)).reshape(-1, 4)
    b_t = torch.as_tensor(np.asarray(b, dtype=np.float32)).reshape(-1, 4)
    if len(a_t) == 0 or len(b_t) == 0:
        return np.zeros((len(a_t), len(b_t)), dtype=np.float32)
    return tv_box_iou(a_t, b_t).numpy()


def _centres_and_sizes(boxes: torch.Tensor) -> tuple[torch.Tensor, ...]:
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    return boxes[:, 0] + 0.5 * widths, boxes[:, 1] + 0.5 * heights, widths, heights


def encode_boxes(proposals: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Regression targets of ``targets`` relative to ``proposals`` (R-CNN appendix C).

    (K, 4), (K, 4) boxes -> (K, 4) (tx, ty, tw, th): tx = (Gx - Px) / Pw, ty = (Gy - Py) / Ph,
    tw = log(Gw / Pw), th = log(Gh / Ph), with centres and sizes in the toolkit's convention.
    """
    px, py, pw, ph = _centres_and_sizes(proposals)
    gx, gy, gw, gh = _centres_and_sizes(targets)
    return torch.stack([(gx - px) / pw, (gy - py) / ph, torch.log(gw / pw), torch.log(gh / ph)], dim=1)


def decode_boxes(proposals: torch.Tensor, deltas: torch.Tensor, max_log_scale: float = 4.135) -> torch.Tensor:
    """Apply (K, 4) regression ``deltas`` to (K, 4) ``proposals``; the inverse of ``encode_boxes``.

    tw and th are clamped at ``max_log_scale`` (log(1000 / 16), as torchvision does) so an untrained
    regressor cannot overflow exp.
    """
    px, py, pw, ph = _centres_and_sizes(proposals)
    cx = px + deltas[:, 0] * pw
    cy = py + deltas[:, 1] * ph
    w = pw * torch.exp(deltas[:, 2].clamp(max=max_log_scale))
    h = ph * torch.exp(deltas[:, 3].clamp(max=max_log_scale))
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=1)
