"""Fast R-CNN as ``rcnn bench`` times it: the shipped test pass (``FastDetector``) of the network and of
its truncated-SVD form, torchvision's RoI heads on the same conv5 as a peer, and a fine-tuning
mini-batch of 2 images and 128 RoIs end to end."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from stages.detections.postprocess import DetectOptions, detect_from_class_boxes
from stages.methods.base import PLAIN, SVD, Benchmark, BenchSettings
from stages.methods.fast.detector import FastDetector
from stages.networks.backbones import build_backbone
from stages.networks.fast_rcnn import FastRcnn, compress, multitask_loss, pooling_rois
from stages.networks.inputs import pad_images, to_network_input
from stages.networks.options import CompressOptions
from stages.networks.precision import autocast
from stages.runs.devices import synchronize

PEER = "torchvision"
"""The peer: torchvision's ``RoIHeads`` (``MultiScaleRoIAlign``, ``TwoMLPHead``, ``FastRCNNPredictor``,
its post-processing) on Fast R-CNN's conv5, with Fast R-CNN's fc weights."""


def benchmark(settings: BenchSettings, options: DetectOptions, compressed: Mapping[str, Any]) -> Benchmark:
    """``options``: the test settings (the peer's post-processing keeps as many); ``compressed``: the
    ranks of the SVD form (``CompressOptions``' fields; the paper's ratios by default)."""
    device, side = settings.device, settings.side
    fast = FastRcnn(build_backbone(settings.backbone), settings.classes)
    smaller = compress(fast, CompressOptions(**compressed).ranks(fast.spec.fc_dim))
    fast, smaller = fast.to(device).eval(), smaller.to(device).eval()
    passes = {}
    for variant, model in ((PLAIN, fast), (SVD, smaller)):
        detector = FastDetector(model, side, 10 * side, device, settings.precision)
        passes[variant] = _detecting(detector, options)
    peer = torchvision_heads(fast, options).to(device).eval()

    def peer_pass(image: np.ndarray, boxes: np.ndarray) -> tuple[float, float]:
        with torch.no_grad(), autocast(settings.precision, device):
            started = time.perf_counter()
            conv5 = fast.conv5(to_network_input(image, device)[None])
            synchronize(device)
            middle = time.perf_counter()
            peer({"0": conv5}, [torch.as_tensor(boxes, device=device)], [image.shape[:2]])
            synchronize(device)
        return middle - started, time.perf_counter() - middle

    labels = torch.as_tensor(
        np.random.default_rng(settings.seed).integers(0, settings.classes + 1, 128), device=device
    )
    pair = [settings.work[k % len(settings.work)] for k in range(2)]
    fast.freeze_early_layers()  # as fine-tuning does: conv1 and conv2 stay

    def training() -> torch.Tensor:
        inputs = pad_images([to_network_input(image, device) for image, _ in pair])
        boxes = torch.cat([torch.as_tensor(np.resize(b, (64, 4)), device=device) for _, b in pair])
        index = torch.arange(2, device=device).repeat_interleave(64)
        scores, deltas = fast(inputs, pooling_rois(boxes, index, 1.0))
        return multitask_loss(scores, deltas, labels, torch.zeros(128, 4, device=device))[0]

    return Benchmark(passes, training, fast, {PEER: peer_pass}, profiled=True)


def _detecting(detector: FastDetector, options: DetectOptions):
    """The test pass as ``rcnn detect`` runs it, post-processing included (in the fc part)."""

    def measure(image: np.ndarray, boxes: np.ndarray) -> tuple[float, float]:
        started = time.perf_counter()
        scores, class_boxes = detector(image, boxes)
        network = time.perf_counter() - started
        detect_from_class_boxes(class_boxes, scores, options)
        conv, fc = detector.last_timing
        return conv, fc + time.perf_counter() - started - network

    return measure


def torchvision_heads(fast: FastRcnn, options: DetectOptions) -> torch.nn.Module:
    """torchvision's own RoI heads with ``fast``'s fc6, fc7, score and box layers: RoIAlign to the same
    grid on the one conv5 map, its two-layer head, its predictor and its post-processing (its box coder
    weights are 10, 10, 5, 5 where ours are 1: the boxes differ, the work does not)."""
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.roi_heads import RoIHeads
    from torchvision.ops import MultiScaleRoIAlign

    spec = fast.spec
    fc6, fc7 = (block[spec.fc_linear_index] for block in (fast.fc6, fast.fc7))
    head = TwoMLPHead(fc6.in_features, fc6.out_features)
    head.fc6.load_state_dict(fc6.state_dict())
    head.fc7.load_state_dict(fc7.state_dict())
    predictor = FastRCNNPredictor(fc7.out_features, fast.scores.out_features)
    predictor.cls_score.load_state_dict(fast.scores.state_dict())
    predictor.bbox_pred.load_state_dict(fast.deltas.state_dict())
    pool = MultiScaleRoIAlign(["0"], output_size=fast.pool_size, sampling_ratio=2)
    score, nms, per_image = options.score_thresh or 0.0, options.nms_iou, options.per_image or 100
    return RoIHeads(pool, head, predictor, 0.5, 0.5, 128, 0.25, None, score, nms, per_image)
