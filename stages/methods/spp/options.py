"""SPP-net's settings, torch-free so that the command line shows them at once: the pyramid's levels, the
window size a region is pooled at, and the options of its feature extraction."""

from __future__ import annotations

from dataclasses import dataclass

from stages.cache.options import CacheOptions
from stages.core.errors import UserError

PYRAMID = (1, 2, 3, 6)
"""The spatial pyramid's levels, n x n bins each: 50 bins of conv5 a window (section 4.1)."""

WINDOW_SIZE = 224
"""A window is pooled at the scale where its area is closest to 224 x 224 (section 4.1): there it spans
14 cells of a stride-16 conv5, enough for the 6 x 6 level to see distinct cells."""


@dataclass(frozen=True)
class SppExtractOptions(CacheOptions):
    """SPP-net features: one scale (688) or the paper's five; the {1, 2, 3, 6} pyramid; each window
    pooled at the scale where it is closest to ``window_size`` squared. ``backbone`` and ``weights`` choose
    the conv layers before fine-tuning (default: the run's pre-trained backbone)."""

    scales: tuple[int, ...] = (688,)
    window_size: int = WINDOW_SIZE
    levels: tuple[int, ...] = PYRAMID
    backbone: str | None = None
    weights: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.scales or min(self.scales) < 16:
            raise UserError("--scales: give shorter-side sizes of at least 16 px")
        if self.window_size < 16:
            raise UserError("--window-size: give at least 16 px")
