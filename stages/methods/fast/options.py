"""Fast R-CNN's settings, torch-free so that the command line shows them at once: its mini-batch sampling,
its fine-tuning and its truncated-SVD compression."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from stages.core.errors import UserError
from stages.core.options import option, workers_option
from stages.networks.options import CompressOptions
from stages.training.options import TrainingOptions, checked_test_scale


@dataclass(frozen=True)
class SamplingOptions:
    """The paper's sampling: N = 2 images, R = 128 RoIs, 25% foreground; shorter side 600, longer <= 1000;
    the images of a batch all wide or all tall (``aspect_grouping``)."""

    images_per_batch: int = 2
    rois_per_batch: int = 128
    foreground_fraction: float = 0.25
    foreground_iou: float = 0.5
    background_iou: tuple[float, float] = (0.1, 0.5)
    scales: tuple[int, ...] = option(
        (600,),
        help="Shorter side(s) of the training images; several: a random one an image (480,576,688,864,1200).",
    )
    max_size: int = option(1000, help="Longest side at most (px; 2000 by default with several scales).")
    mirror: bool = True
    aspect_grouping: bool = option(
        True, help="A mini-batch's images all wide or all tall (as py-faster-rcnn)."
    )


@dataclass(frozen=True)
class FastFinetuneOptions(TrainingOptions):
    """Fast R-CNN training (sections 2.3 and 4): the paper's solver and sampling; ``scales`` one (600) or
    several (a random one an image); ``test_scale`` (default: the training scale, or 600 with several);
    ``trainable_from``, the first layer fine-tuned (default: the backbone's; section 4.5's ablation: fc6,
    conv3_1 or conv2_1 for VGG16). The backbone, known at training time, checks the layer's name."""

    iterations: int = 40000
    learning_rate: float = 0.001
    step: int = 30000
    backbone: str | None = option(
        None, help="Backbone: tiny, alexnet, vgg16 or zf5 (default: the run's, RUN/backbone.pt)."
    )
    weights: str | None = option(
        None, help="Start from: RUN/backbone.pt (default), imagenet, random, or a weights file."
    )
    box_weight: float = 1.0
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    test_scale: int | None = option(
        None, help="Test scale (default: the training scale, or 600 with several)."
    )
    trainable_from: str | None = option(
        None,
        help="First layer fine-tuned, those before it frozen: a conv layer (conv1, conv3_1, ...) or fc6 "
        "(default: the backbone's: conv3_1 for vgg16, conv2 for the others; section 4.5).",
    )
    workers: int = workers_option()

    RUNTIME: ClassVar[tuple[str, ...]] = ("iterations", "workers", "device", "test_scale")

    def __post_init__(self) -> None:
        super().__post_init__()
        sampling = self.sampling
        if sampling.images_per_batch < 1 or sampling.rois_per_batch < sampling.images_per_batch:
            raise UserError("--images-per-batch and --rois-per-batch: at least one RoI an image")
        checked_test_scale(sampling.scales, sampling.max_size, self.test_scale)

    @property
    def resolved_test_scale(self) -> int:
        return checked_test_scale(self.sampling.scales, self.sampling.max_size, self.test_scale)


COMMAND_OPTIONS = {"finetune": FastFinetuneOptions, "compress": CompressOptions}
"""The options of each staged command that runs a stage of Fast R-CNN (``stages.methods.METHODS``)."""
