"""SPP-net's geometry and pooling (He et al., ECCV 2014, section 2.3 and appendix).

- ``receptive_field``: from a backbone's declared layers, the effective stride alpha, the receptive-field
  size and the centre of the first conv5 cell: i0 = alpha (i - 1) + beta, 1-based, with
  alpha = prod S_p and beta = 1 + sum_p (prod_{q<p} S_q) ((F_p - 1) / 2 - P_p).
- ``project_windows``: image windows onto conv5 cells by the paper's rule, left/top floor(x / S) + 1 and
  right/bottom ceil(x / S) - 1 in its 1-based convention, with x measured from the first cell's centre
  (beta - 1 = 0 when every layer pads floor(k / 2), as the paper assumes).
- ``spatial_pyramid_pool``: max pooling of each window over n x n bins for every pyramid level; bin i of n
  over w cells covers cells [floor(i w / n), ceil((i + 1) w / n)) (0-based), the paper's
  [floor((i - 1) w / n), ceil(i w / n)]. On integer cell windows this is exactly the bin rule of
  ``torchvision.ops.roi_pool``, which does the pooling (and its backward: each cell's gradient is the sum
  of the output gradients of the bins that took it as their max) at the finest level; the levels that
  divide it are maxima over blocks of its bins (the same forward; where several finest bins tie for a
  block's maximum, ``amax`` shares the gradient among them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from stages.methods.spp.options import PYRAMID
from stages.networks.backbones import Layer
from stages.networks.precision import pooling_input


@dataclass(frozen=True)
class ReceptiveField:
    """Where conv5 cells look in the image: cell i (1-based) is centred on pixel alpha (i - 1) + beta and
    sees ``size`` pixels a side."""

    stride: int
    size: int
    beta: float

    @property
    def first_extent(self) -> tuple[float, float]:
        """1-based first and last pixel of the first cell's receptive field (padding makes it reach out)."""
        radius = (self.size - 1) / 2
        return self.beta - radius, self.beta + radius


def receptive_field(layers: Sequence[Layer]) -> ReceptiveField:
    """Stride, receptive-field size and first-cell centre of the top of ``layers`` (conv or pool)."""
    stride, size, beta = 1, 1, 1.0
    for layer in layers:
        size += (layer.kernel - 1) * stride
        beta += stride * ((layer.kernel - 1) / 2 - layer.padding)
        stride *= layer.stride
    return ReceptiveField(stride, size, beta)


def project_windows(boxes: torch.Tensor, field: ReceptiveField, height: int, width: int) -> torch.Tensor:
    """(R, 4) toolkit boxes -> (R, 4) int64 conv5 cells (x1, y1, x2, y2), 0-based and inclusive.

    The box is first written in the paper's 1-based pixels (first pixel x1 + 1, last pixel x2), shifted by
    the first cell's centre, projected by floor(x / S) + 1 and ceil(x / S) - 1, and converted back to
    0-based cells. Every window keeps at least one cell and lies inside the (height, width) map.
    """
    shift = field.beta - 1
    first = boxes[:, :2] + 1 - shift
    last = boxes[:, 2:] - shift
    start = torch.floor(first / field.stride)  # floor(x / S) + 1, then -1 for 0-based
    stop = torch.ceil(last / field.stride) - 2  # ceil(x / S) - 1, then -1 for 0-based
    limits = torch.tensor([width - 1, height - 1], dtype=boxes.dtype, device=boxes.device)
    start = torch.minimum(start.clamp(min=0), limits)
    stop = torch.minimum(torch.maximum(stop, start), limits)  # never empty, never outside
    return torch.cat([start, stop], dim=1).long()


def spatial_pyramid_pool(
    features: torch.Tensor, cells: torch.Tensor, image_index: torch.Tensor, levels: Sequence[int] = PYRAMID
) -> torch.Tensor:
    """Pool (B, C, H, W) ``features`` over (R, 4) inclusive ``cells`` of images ``image_index`` (R,).

    Returns (R, C * sum(n^2)): for each level in order, the (C, n, n) maxima flattened channel-major.

    A level n that divides the finest level m is taken from the finest one's bins: bin i of n is the union
    of bins k i .. k i + k - 1 of m = k n (their edges meet at floor(k i w / m) = floor(i w / n)), so its
    maximum is theirs, and one ``roi_pool`` pass serves the paper's four levels.
    """
    from torchvision.ops import roi_pool

    features = pooling_input(features)
    rois = torch.cat([image_index[:, None].to(features.dtype), cells.to(features.dtype)], dim=1)
    finest = max(levels)
    fine = roi_pool(features, rois, (finest, finest), spatial_scale=1.0)  # (R, C, m, m)
    pooled = []
    for n in levels:
        if finest % n:
            grid = roi_pool(features, rois, (n, n), spatial_scale=1.0)
        else:
            k = finest // n
            grid = fine.unflatten(3, (n, k)).unflatten(2, (n, k)).amax(dim=(3, 5))
        pooled.append(grid.flatten(1))
    return torch.cat(pooled, dim=1)


def pyramid_bins(levels: Sequence[int] = PYRAMID) -> int:
    """Bins a channel: 50 for {1, 2, 3, 6}."""
    return sum(n * n for n in levels)


def bin_edges(size: int, n: int) -> list[tuple[int, int]]:
    """The paper's bins of an n-way split of ``size`` cells: [floor(i size / n), ceil((i + 1) size / n))."""
    return [(math.floor(i * size / n), math.ceil((i + 1) * size / n)) for i in range(n)]
