"""Faster R-CNN's settings, torch-free so that the command line shows them at once: the anchors, the region
proposal network's training and proposal layer, and the detector's RoI sampling."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from stages.core.errors import UserError
from stages.core.options import option, workers_option
from stages.networks.options import CompressOptions
from stages.training.options import TrainingOptions, checked_test_scale


@dataclass(frozen=True)
class RpnOptions:
    """The region proposal network (section 3.1): anchors of ``anchor_sizes`` (the square root of their
    area, px of the scaled image) and ``anchor_ratios`` (height / width) on every conv5 cell; positive
    above ``positive_iou`` or an object's best, negative below ``negative_iou``; 256 anchors an image, at
    most half positive; loss weight lambda = 10. The proposal layer: boxes smaller than ``min_size`` px
    of the original image dropped, NMS at ``nms_iou``, the best ``*_pre_nms`` before it and ``*_post_nms``
    after, in training and at test (py-faster-rcnn's 12000 / 2000 and 6000 / 300). ``conv_init_std``: the
    RPN's 3 x 3 conv starts from N(0, std^2), the paper's 0.01 (set for VGG16's conv5; a backbone whose
    conv5 is far smaller, as ``tiny``'s, learns faster from a larger one: docs/measurements.md)."""

    anchor_sizes: tuple[int, ...] = option(
        (128, 256, 512), help="Anchor sizes: the square root of their areas, px of the scaled image."
    )
    anchor_ratios: tuple[float, ...] = option((0.5, 1.0, 2.0), help="Anchor aspect ratios (height / width).")
    positive_iou: float = 0.7
    negative_iou: float = 0.3
    anchors_per_image: int = 256
    positive_fraction: float = 0.5
    box_weight: float = 10.0
    box_beta: float = 1.0
    conv_init_std: float = 0.01
    nms_iou: float = 0.7
    min_size: float = 16.0
    train_pre_nms: int = 12000
    train_post_nms: int = 2000
    test_pre_nms: int = 6000
    test_post_nms: int = option(300, help="Proposals an image the network keeps at test time.")

    def __post_init__(self) -> None:
        if not self.anchor_sizes or min(self.anchor_sizes) < 1:
            raise UserError("--anchor-sizes: give positive sizes in pixels, e.g. 16,32,64")
        if not self.anchor_ratios or min(self.anchor_ratios) <= 0:
            raise UserError("--anchor-ratios: give positive height / width ratios, e.g. 0.5,1,2")
        if not 0 <= self.negative_iou <= self.positive_iou <= 1:
            raise UserError("the RPN's IoU thresholds: 0 <= negative <= positive <= 1")
        counts = (self.train_pre_nms, self.train_post_nms, self.test_pre_nms, self.test_post_nms)
        if self.conv_init_std <= 0:
            raise UserError("the RPN's conv_init_std: a positive standard deviation, e.g. 0.01")
        if min(counts) < 1 or self.anchors_per_image < 1:
            raise UserError("--test-post-nms and the RPN's other counts: at least 1")

    @property
    def anchors_per_cell(self) -> int:
        return len(self.anchor_sizes) * len(self.anchor_ratios)


SCHEMES = ("joint", "alternating")
"""Faster R-CNN's training schemes (section 3.2), ``FasterFinetuneOptions.scheme``."""

ALTERNATING_STEPS = ("step1", "step2", "step3", "step4")
"""The alternating scheme's four trainings, each with its checkpoint and log in a folder of its name."""


@dataclass(frozen=True)
class FasterFinetuneOptions(TrainingOptions):
    """Faster R-CNN training (section 3.2): SGD at 0.001 for 60k mini-batches, then 0.0001 for 20k, one
    image a mini-batch at shorter side 600 (longer at most 1000), mirrored with probability 0.5; by
    approximate joint training or the 4-step alternating ``scheme``; the RPN (``rpn``) and Fast R-CNN's
    head on 128 of its proposals an image, a quarter foreground (IoU >= 0.5), the rest background below
    0.5 (py-faster-rcnn's joint training keeps background down to IoU 0)."""

    iterations: int = 80000
    learning_rate: float = 0.001
    step: int = 60000
    backbone: str | None = option(
        None, help="Backbone: tiny, alexnet, vgg16 or zf5 (default: the run's, RUN/backbone.pt)."
    )
    weights: str | None = option(
        None, help="Start from: RUN/backbone.pt (default), imagenet, random, or a weights file."
    )
    scheme: str = option(
        "joint",
        help="joint: approximate joint training (one network, the two losses summed); alternating: the "
        "paper's 4 steps, each of --iterations.",
    )
    rpn: RpnOptions = field(default_factory=RpnOptions)
    rois_per_image: int = 128
    foreground_fraction: float = 0.25
    foreground_iou: float = 0.5
    background_iou: tuple[float, float] = (0.0, 0.5)
    box_weight: float = 1.0
    scales: tuple[int, ...] = option((600,), help="Shorter side(s) of the training images.")
    max_size: int = option(1000, help="Longest side at most (px).")
    mirror: bool = True
    test_scale: int | None = option(
        None, help="Test scale (default: the training scale, or 600 with several)."
    )
    workers: int = workers_option()

    RUNTIME: ClassVar[tuple[str, ...]] = ("iterations", "workers", "device", "test_scale")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scheme not in SCHEMES:
            raise UserError(f"--scheme: {self.scheme!r} is not one of {', '.join(SCHEMES)}")
        checked_test_scale(self.scales, self.max_size, self.test_scale)

    @property
    def resolved_test_scale(self) -> int:
        return checked_test_scale(self.scales, self.max_size, self.test_scale)

    @property
    def training_parts(self) -> tuple[str, ...]:
        return ALTERNATING_STEPS if self.scheme == "alternating" else ()


PROPOSER = "rpn"
"""What ``rcnn propose --proposer`` calls its trained network's proposals (``stages.methods.METHODS``)."""

COMMAND_OPTIONS = {"finetune": FasterFinetuneOptions, "compress": CompressOptions}
"""The options of each staged command that runs a stage of Faster R-CNN (``stages.methods.METHODS``)."""
