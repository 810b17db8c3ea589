"""SPP-net's settings, torch-free so that the command line shows them at once: the pyramid's levels, the
window size a region is pooled at, and the options of its feature extraction and fine-tuning."""

from __future__ import annotations

from dataclasses import dataclass

from stages.cache.options import CacheOptions
from stages.core.errors import UserError
from stages.core.options import option
from stages.training.options import TrainingOptions

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

    scales: tuple[int, ...] = option(
        (688,),
        help="Shorter side(s) of the image pyramid (the paper: 688, or 480,576,688,864,1200).",
    )
    window_size: int = option(
        WINDOW_SIZE, help="Each window is pooled at the scale where it is closest to this squared (px)."
    )
    levels: tuple[int, ...] = PYRAMID
    backbone: str | None = option(
        None, help="Before fine-tuning: the conv layers' backbone (default: the run's)."
    )
    weights: str | None = option(
        None, help="Before fine-tuning: RUN/backbone.pt (default), imagenet, or a weights file."
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.scales or min(self.scales) < 16:
            raise UserError("--scales: give shorter-side sizes of at least 16 px")
        if self.window_size < 16:
            raise UserError("--window-size: give at least 16 px")


@dataclass(frozen=True)
class SppFinetuneOptions(TrainingOptions):
    """SPP-net fc fine-tuning (section 4.1): fc6, fc7 and a new (N + 1)-way layer on cached pyramids;
    25% foreground (IoU >= 0.5), background IoU in [0.1, 0.5), drawn with replacement; 250k mini-batches
    at 1e-4, then 50k at 1e-5. Mini-batches are drawn from one block of the cache at a time
    (``block_rows`` regions, read once for ``block_iterations`` mini-batches, by default as many as draw
    about as many windows as the block holds), so memory stays bounded and the cache is read a few
    times, not once a mini-batch."""

    iterations: int = 300000
    learning_rate: float = 0.0001
    step: int = 250000
    batch_size: int = 128
    foreground_fraction: float = 0.25
    foreground_iou: float = 0.5
    background_iou: tuple[float, float] = (0.1, 0.5)
    block_rows: int = 32768
    block_iterations: int | None = None


COMMAND_OPTIONS = {"finetune": SppFinetuneOptions, "extract-features": SppExtractOptions}
"""The options of each staged command that runs a stage of SPP-net (``stages.methods.METHODS``)."""
