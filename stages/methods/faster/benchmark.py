"""Faster R-CNN as ``rcnn bench`` times it: the shipped test pass (``FasterDetector``: conv5, the RPN and its
proposal layer, Fast R-CNN's head) of the network and of its truncated-SVD form, and a training iteration
of approximate joint training on one image. The given proposals are not used: the network makes its own,
and their time is counted in the conv part (conv5, the RPN's convolutions and its proposal layer); the fc
part is the region-wise work."""

from __future__ import annotations

import time

import numpy as np
import torch

from stages.detections.postprocess import DetectOptions, detect_from_class_boxes
from stages.methods.base import PLAIN, SVD, Benchmark, BenchSettings, Measure
from stages.methods.faster.detector import FasterDetector, ProposalLayer
from stages.methods.faster.finetune import FasterLoss
from stages.methods.faster.network import FasterRcnn
from stages.methods.faster.options import FasterFinetuneOptions
from stages.networks.backbones import build_backbone
from stages.networks.fast_rcnn import compress
from stages.networks.inputs import to_network_input
from stages.networks.options import CompressOptions


def benchmark(settings: BenchSettings, options: DetectOptions) -> Benchmark:
    """``options``: the test settings; the SVD form keeps ``settings.compress``'s ranks (the paper's ratios
    by default); the training iteration takes the first image's first proposals as its objects."""
    device, side = settings.device, settings.side
    faster = FasterRcnn(build_backbone(settings.backbone), settings.classes)
    smaller = compress(faster, CompressOptions(**settings.compress).ranks(faster.spec.fc_dim))
    faster, smaller = faster.to(device).eval(), smaller.to(device).eval()
    passes = {
        variant: _detecting(
            FasterDetector(model, side, 10 * side, ProposalLayer(), device, settings.precision), options
        )
        for variant, model in ((PLAIN, faster), (SVD, smaller))
    }
    image, boxes = settings.work[0]
    objects = torch.as_tensor(np.asarray(boxes[:8], dtype=np.float32)).reshape(-1, 4)
    labels = torch.as_tensor(
        np.random.default_rng(settings.seed).integers(1, settings.classes + 1, len(objects))
    )
    loss = FasterLoss(faster, FasterFinetuneOptions())
    faster.freeze_early_layers()
    seeds = torch.tensor([settings.seed, 0, 0])

    def training() -> torch.Tensor:
        inputs = to_network_input(image, device)[None]
        return loss(inputs, objects, labels, torch.tensor([1.0]), seeds, torch.zeros(0, 4))[0]

    return Benchmark(passes, training, faster, profiled=True)


def _detecting(detector: FasterDetector, options: DetectOptions) -> Measure:
    """The test pass as ``rcnn detect`` runs it, post-processing included (in the fc part)."""

    def measure(image: np.ndarray, boxes: np.ndarray) -> tuple[float, float]:
        started = time.perf_counter()
        found = detector(image)
        network = time.perf_counter() - started
        detect_from_class_boxes(found.class_boxes, found.probabilities, options)
        conv, proposals, head = detector.last_timing
        return conv + proposals, head + time.perf_counter() - started - network

    return measure
