"""Fast R-CNN at test time (Girshick, ICCV 2015, section 3): the image at one scale, conv5 once, every
proposal RoI-pooled; softmax scores and each class's own box."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

from stages.methods.fast.network import load_trained
from stages.networks.fast_rcnn import FastRcnn, score_regions
from stages.networks.inputs import resized_input, scale_factor
from stages.networks.models import TrainedModel
from stages.networks.precision import autocast, check_supported
from stages.runs.devices import synchronize
from stages.runs.layout import RunLayout


class FastDetector:
    """``(image, boxes (N, 4)) -> (probabilities (N, K), class boxes (N, K, 4))``, boxes clipped to the
    image. ``last_timing`` holds the seconds of the conv and the RoI-pooling + fc parts of the last call.
    The network computes in ``precision`` (``stages.networks.precision``); softmax and box decoding in
    float32."""

    def __init__(
        self, model: FastRcnn, scale: int, max_size: int, device: torch.device, precision: str = "fp32"
    ):
        check_supported(precision, device)
        import torchvision.ops  # noqa: F401  (RoI pooling's: 2 s to import, paid here, not by the first image)

        self.model = model.to(device).eval()
        self.scale, self.max_size, self.device, self.precision = scale, max_size, device, precision
        self.last_timing = (0.0, 0.0)

    @torch.no_grad()
    def __call__(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        height, width = image.shape[:2]
        factor = scale_factor(height, width, self.scale, self.max_size)
        started = time.perf_counter()
        with autocast(self.precision, self.device):
            conv5 = self.model.conv5(resized_input(image, factor, self.device)[None])
        synchronize(self.device)
        middle = time.perf_counter()
        proposals = torch.as_tensor(np.asarray(boxes, np.float32), device=self.device)
        found = score_regions(self.model, conv5, proposals, factor, (height, width), self.precision)
        self.last_timing = (middle - started, time.perf_counter() - middle)
        return found


def fast_detector(
    run: RunLayout,
    device: torch.device,
    compressed: bool = False,
    classes: Sequence[str] | None = None,
    precision: str = "fp32",
) -> tuple[FastDetector, TrainedModel[FastRcnn]]:
    """The run's Fast R-CNN as a detector at its test scale, with the model it runs."""
    trained = load_trained(run, compressed, classes)
    meta = trained.meta
    detector = FastDetector(trained.module, meta["test_scale"], meta["max_size"], device, precision)
    return detector, trained
