"""SPP-net as ``rcnn bench`` times it: the shipped feature pass (``SppExtractor``: conv5 once a scale,
every window's pyramid, fc6 and fc7) and a fine-tuning mini-batch of 128 cached pyramids through fc6, fc7
and the scores (its conv layers are not fine-tuned)."""

from __future__ import annotations

import numpy as np
import torch

from stages.methods.base import PLAIN, Benchmark, BenchSettings
from stages.methods.spp.features import SppExtractor
from stages.methods.spp.network import SppClassifier, SppNet
from stages.methods.spp.options import WINDOW_SIZE
from stages.networks.backbones import build_backbone


def benchmark(settings: BenchSettings) -> Benchmark:
    """At ``settings.scales``, one scale (the images' shorter side) by default."""
    device = settings.device
    net = SppNet(build_backbone(settings.backbone))
    scales = settings.scales or (settings.side,)
    extractor = SppExtractor(net, scales, WINDOW_SIZE, device, True, settings.precision)

    def test(image: np.ndarray, boxes: np.ndarray) -> tuple[float, float]:
        extractor(image, boxes)
        return extractor.last_timing

    model = SppClassifier(net, settings.classes + 1).to(device)
    labels = torch.as_tensor(
        np.random.default_rng(settings.seed).integers(0, settings.classes + 1, 128), device=device
    )
    pyramids = torch.rand(128, net.pyramid_dim, device=device)

    def training() -> torch.Tensor:
        return torch.nn.functional.cross_entropy(model(pyramids), labels)

    return Benchmark({PLAIN: test}, training, model)
