"""R-CNN's options, torch-free so that the command line shows them at once: its fine-tuning and its
feature extraction."""

from __future__ import annotations

from dataclasses import dataclass

from stages.cache.options import CacheOptions
from stages.core.options import option, workers_option
from stages.training.options import TrainingOptions


@dataclass(frozen=True)
class ExtractOptions(CacheOptions):
    """R-CNN's feature caching: ``batch_size`` warped regions a forward pass."""

    batch_size: int = option(256, help="Warped regions a forward pass.")


@dataclass(frozen=True)
class FinetuneOptions(TrainingOptions):
    """R-CNN fine-tuning (section 2.3 and the release's solver): SGD at 0.001, x0.1 every 20k of 40k
    iterations, momentum 0.9, weight decay 0.0005; new layer at 10x (weights) and 20x (biases); mini-batches
    of 128 windows, 25% with IoU >= 0.5 (any class) and the rest background, drawn with replacement and
    mirrored at random."""

    iterations: int = 40000
    learning_rate: float = 0.001
    step: int = 20000
    backbone: str | None = option(
        None, help="Backbone: tiny, alexnet, vgg16 or zf5 (default: the run's, RUN/backbone.pt)."
    )
    weights: str | None = option(
        None, help="Start from: RUN/backbone.pt (default), imagenet, random, or a weights file."
    )
    batch_size: int = 128
    foreground_fraction: float = 0.25
    foreground_iou: float = 0.5
    mirror: bool = True
    workers: int = workers_option()


COMMAND_OPTIONS = {"finetune": FinetuneOptions, "extract-features": ExtractOptions}
"""The options of each staged command that runs a stage of R-CNN (``stages.methods.METHODS``)."""
