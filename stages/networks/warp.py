"""R-CNN's region warping (R-CNN section 2.1 and appendix A).

Each box is dilated so that, once warped to ``size`` x ``size``, ``padding`` pixels of image context surround
it; the dilated window is then warped anisotropically with bilinear sampling, one sample at each output
pixel's centre. Parts of the window outside the image read as the mean pixel (0 in normalised input).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from stages.networks.inputs import to_network_input


def context_windows(boxes: torch.Tensor, size: int, padding: int) -> torch.Tensor:
    """(N, 4) boxes -> (N, 4) windows scaled about their centres by size / (size - 2 padding)."""
    scale = size / (size - 2 * padding)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    half_sizes = (boxes[:, 2:] - boxes[:, :2]) * (scale / 2)
    return torch.cat([centres - half_sizes, centres + half_sizes], dim=1)


def warp_regions(image: torch.Tensor, boxes: torch.Tensor, size: int, padding: int) -> torch.Tensor:
    """Warp the context windows of ``boxes`` out of ``image``.

    image: (3, H, W) normalised float; boxes: (N, 4) in the toolkit's convention, on image's device.
    Returns (N, 3, size, size). Output pixel (i, j) samples the window at its fractional position
    ((j + 1/2) / size, (i + 1/2) / size), bilinearly, with zeros (the mean) outside the image.
    """
    height, width = image.shape[-2:]
    windows = context_windows(boxes.to(image.dtype), size, padding)
    steps = (torch.arange(size, device=image.device, dtype=image.dtype) + 0.5) / size
    xs = windows[:, 0:1] + steps * (windows[:, 2:3] - windows[:, 0:1])  # (N, size) continuous x
    ys = windows[:, 1:2] + steps * (windows[:, 3:4] - windows[:, 1:2])
    # grid_sample's align_corners=False maps -1 and 1 to the image's outer edges: continuous 0 and W.
    grid_x = (xs * (2 / width) - 1)[:, None, :].expand(-1, size, -1)
    grid_y = (ys * (2 / height) - 1)[:, :, None].expand(-1, -1, size)
    grid = torch.stack([grid_x, grid_y], dim=-1)
    batch = image[None].expand(len(boxes), -1, -1, -1)
    return F.grid_sample(batch, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


REGION_PIXELS = 1 << 24
"""The most image pixels normalised at once for one image's windows (16.8 million: 200 MB as floats). A batch
whose windows span more is warped window by window, and a window that alone is larger than
``(4 size)^2`` pixels is first shrunk to that in 8 bits (OpenCV's area interpolation), so that a 100-megapixel
photo never exists as floats. Windows of ordinary images are far below both."""


def warp_batch(
    images: Mapping[int, np.ndarray],
    image_index: np.ndarray,
    boxes: np.ndarray,
    size: int,
    padding: int,
    flips: np.ndarray | None = None,
) -> torch.Tensor:
    """Warp windows from several images into one (B, 3, size, size) batch, in the order given.

    images: image number -> (H, W, 3) uint8 RGB; image_index (B,) picks each window's image; boxes (B, 4);
    flips (B,) bool mirrors a crop left-right (R-CNN's training augmentation).
    """
    crops = torch.zeros(len(boxes), 3, size, size)
    boxes_t = torch.as_tensor(np.asarray(boxes, dtype=np.float32))
    for index in np.unique(image_index):  # one grid_sample an image, never a loop over windows
        rows = torch.as_tensor(np.flatnonzero(image_index == index))
        image = images[index]
        region = _region(image, context_windows(boxes_t[rows], size, padding))
        if region is None:  # every window lies outside the image: all mean
            continue
        x0, y0, x1, y1 = region
        if (x1 - x0) * (y1 - y0) <= REGION_PIXELS:
            crops[rows] = _warp_from(image, region, boxes_t[rows], size, padding)
        else:
            for row in rows.tolist():
                crops[row] = _warp_one(image, boxes_t[row : row + 1], size, padding)[0]
    if flips is not None and flips.any():
        mirrored = torch.as_tensor(np.flatnonzero(flips))
        crops[mirrored] = crops[mirrored].flip(-1)
    return crops


def _region(image: np.ndarray, windows: torch.Tensor) -> tuple[int, int, int, int] | None:
    """The part of the image the windows read, plus the pixel bilinear sampling needs; None if empty."""
    x0, y0 = (max(0, math.floor(v) - 1) for v in windows[:, :2].amin(0).tolist())
    x1 = min(image.shape[1], math.ceil(windows[:, 2].max().item()) + 1)
    y1 = min(image.shape[0], math.ceil(windows[:, 3].max().item()) + 1)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _warp_from(
    image: np.ndarray, region: tuple[int, int, int, int], boxes: torch.Tensor, size: int, padding: int
) -> torch.Tensor:
    """Warp ``boxes`` normalising only ``region`` (x0, y0, x1, y1) of the image."""
    x0, y0, x1, y1 = region
    shift = torch.tensor([x0, y0, x0, y0], dtype=torch.float32)
    return warp_regions(to_network_input(image[y0:y1, x0:x1]), boxes - shift, size, padding)


def _warp_one(image: np.ndarray, box: torch.Tensor, size: int, padding: int) -> torch.Tensor:
    """Warp one (1, 4) box; a window larger than ``(4 size)^2`` pixels is shrunk to that first."""
    region = _region(image, context_windows(box, size, padding))
    if region is None:
        return torch.zeros(1, 3, size, size)
    x0, y0, x1, y1 = region
    factor = min(1.0, 4 * size / math.sqrt((x1 - x0) * (y1 - y0)))
    if factor == 1:
        return _warp_from(image, region, box, size, padding)
    shrunk_size = (max(1, round((x1 - x0) * factor)), max(1, round((y1 - y0) * factor)))
    part = cv2.resize(image[y0:y1, x0:x1], shrunk_size, interpolation=cv2.INTER_AREA)
    scale = torch.tensor([shrunk_size[0] / (x1 - x0), shrunk_size[1] / (y1 - y0)] * 2)
    shift = torch.tensor([x0, y0, x0, y0], dtype=torch.float32)
    return warp_regions(to_network_input(part), (box - shift) * scale, size, padding)
