"""R-CNN as ``rcnn bench`` times it: the shipped feature pass (``RegionExtractor``: every region warped
and through conv1..fc7) and a fine-tuning mini-batch of 128 warped windows through the whole network."""

from __future__ import annotations

import numpy as np
import torch

from stages.methods.base import PLAIN, Benchmark, BenchSettings
from stages.methods.rcnn.features import RegionExtractor
from stages.networks.backbones import Classifier, build_backbone
from stages.networks.inputs import to_network_input
from stages.networks.warp import warp_regions


def benchmark(settings: BenchSettings) -> Benchmark:
    device = settings.device
    model = Classifier(build_backbone(settings.backbone), settings.classes + 1).to(device)
    extractor = RegionExtractor(model, device, precision=settings.precision)

    def test(image: np.ndarray, boxes: np.ndarray) -> tuple[float, float]:
        extractor(image, boxes)
        return extractor.last_timing

    labels = torch.as_tensor(
        np.random.default_rng(settings.seed).integers(0, settings.classes + 1, 128), device=device
    )
    image, boxes = settings.work[0]
    windows = torch.as_tensor(np.resize(boxes, (128, 4)), device=device)  # cycled when fewer than 128
    spec = model.backbone.spec

    def training() -> torch.Tensor:
        crops = warp_regions(to_network_input(image, device), windows, spec.input_size, spec.context_padding)
        return torch.nn.functional.cross_entropy(model(crops), labels)

    return Benchmark({PLAIN: test}, training, model)
