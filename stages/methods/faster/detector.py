"""Faster R-CNN at test time (Ren et al., NIPS 2015, section 3.3): the image at one scale, conv5 once, the
RPN's proposals from it (6000 best before NMS, 300 after), then Fast R-CNN's scores and class-specific boxes
on those proposals; no selective search."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from stages.methods.faster.network import FasterRcnn, load_trained
from stages.networks.fast_rcnn import score_regions
from stages.networks.inputs import resized_input, scale_factor
from stages.networks.models import TrainedModel
from stages.networks.precision import autocast, check_supported
from stages.runs.devices import synchronize
from stages.runs.layout import RunLayout


@dataclass(frozen=True)
class ProposalLayer:
    """The RPN's test settings (``RpnOptions``): NMS IoU, minimum box side (px of the original image), and
    the proposals kept before and after NMS."""

    nms_iou: float = 0.7
    min_size: float = 16.0
    test_pre_nms: int = 6000
    test_post_nms: int = 300

    @classmethod
    def of(cls, meta: Mapping[str, Any], post_nms: int | None = None) -> ProposalLayer:
        """The settings a model file records (its ``rpn``), with ``post_nms`` proposals when given."""
        found = cls(**meta["rpn"])
        if post_nms is None:
            return found
        return cls(found.nms_iou, found.min_size, max(found.test_pre_nms, post_nms), post_nms)


@dataclass(frozen=True)
class Detected:
    """One image's test pass: the proposals (N, 4) the head scored and their objectness (N,), each
    class's probability (N, K) and box (N, K, 4), all on the original image; ``ranked``: the RPN's
    proposals best first, of which ``proposals`` are the first N (more of them when the detector keeps
    more for their recall)."""

    proposals: np.ndarray
    objectness: np.ndarray
    probabilities: np.ndarray
    class_boxes: np.ndarray
    ranked: np.ndarray


class FasterDetector:
    """``(image (H, W, 3) uint8 RGB) -> Detected``. ``last_timing`` holds the seconds of the conv, the
    proposals and the RoI-pooling + fc parts of the last call. The network computes in ``precision``.
    Up to ``ranked`` proposals an image are kept (at most the layer's ``test_pre_nms`` before NMS; the
    head scores the ``test_post_nms`` best of them): the proposal layer's NMS keeps boxes best first, so
    the head's are the same either way."""

    def __init__(
        self,
        model: FasterRcnn,
        scale: int,
        max_size: int,
        layer: ProposalLayer,
        device: torch.device,
        precision: str = "fp32",
        ranked: int = 0,
    ):
        check_supported(precision, device)
        import torchvision.ops  # noqa: F401  (NMS's and RoI pooling's: 2 s to import, paid here)

        self.model = model.to(device).eval()
        self.scale, self.max_size, self.layer = scale, max_size, layer
        self.device, self.precision = device, precision
        self.ranked = max(ranked, layer.test_post_nms)
        self.last_timing = (0.0, 0.0, 0.0)

    @torch.no_grad()
    def conv5(self, image: np.ndarray) -> tuple[torch.Tensor, float, tuple[int, int]]:
        """(1, C, h, w) conv5 of ``image`` at the test scale, the scale factor and the scaled size."""
        height, width = image.shape[:2]
        factor = scale_factor(height, width, self.scale, self.max_size)
        tensor = resized_input(image, factor, self.device)[None]
        with autocast(self.precision, self.device):
            return self.model.conv5(tensor), factor, (tensor.shape[-2], tensor.shape[-1])

    @torch.no_grad()
    def proposals(
        self, conv5: torch.Tensor, factor: float, scaled_size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The RPN's ``ranked`` proposals (N, 4) on the original image, best first, and their objectness
        (N,)."""
        layer = self.layer
        with autocast(self.precision, self.device):
            boxes, objectness = self.model.proposals(
                conv5,
                scaled_size,
                pre_nms=layer.test_pre_nms,
                post_nms=self.ranked,
                nms_iou=layer.nms_iou,
                min_size=layer.min_size * factor,
            )
        return boxes / factor, objectness.float()

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> Detected:
        started = time.perf_counter()
        conv5, factor, scaled_size = self.conv5(image)
        synchronize(self.device)
        convolved = time.perf_counter()
        ranked, objectness = self.proposals(conv5, factor, scaled_size)
        proposals = ranked[: self.layer.test_post_nms]
        synchronize(self.device)
        proposed = time.perf_counter()
        probabilities, class_boxes = score_regions(
            self.model, conv5, proposals, factor, image.shape[:2], self.precision
        )
        self.last_timing = (convolved - started, proposed - convolved, time.perf_counter() - proposed)
        return Detected(
            proposals.cpu().numpy(),
            objectness[: len(proposals)].cpu().numpy(),
            probabilities,
            class_boxes,
            ranked.cpu().numpy(),
        )


def faster_detector(
    run: RunLayout,
    device: torch.device,
    compressed: bool = False,
    classes: Sequence[str] | None = None,
    precision: str = "fp32",
    post_nms: int | None = None,
    ranked: int = 0,
) -> tuple[FasterDetector, TrainedModel[FasterRcnn]]:
    """The run's Faster R-CNN as a detector at its test scale, with the model it runs; ``post_nms``
    proposals an image (default: the model's, 300); ``ranked``: proposals kept beyond them."""
    trained = load_trained(run, compressed, classes)
    meta = trained.meta
    layer = ProposalLayer.of(meta, post_nms)
    return FasterDetector(
        trained.module, meta["test_scale"], meta["max_size"], layer, device, precision, ranked
    ), trained
