"""The FasterRCNN method object: what the shared stages ask of it (``stages.methods.base.Method``)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from stages.core.progress import SILENT, Progress
from stages.datasets.records import Dataset
from stages.detections.postprocess import DetectOptions, ImageDetections, detect_from_class_boxes
from stages.methods.base import (
    PLAIN,
    SVD,
    Benchmark,
    BenchSettings,
    ImageDetector,
    ImageResult,
    Method,
    Variant,
)
from stages.methods.faster.benchmark import benchmark
from stages.methods.faster.detector import Detected, FasterDetector, faster_detector
from stages.methods.faster.finetune import finetune
from stages.methods.faster.network import NAME, FasterRcnn, load_trained, save_faster
from stages.methods.faster.options import FasterFinetuneOptions, RpnOptions
from stages.methods.faster.proposer import RpnProposer
from stages.networks.fast_rcnn import CompressSummary, compress_file
from stages.networks.inputs import read_image
from stages.networks.options import CompressOptions
from stages.proposals.recall import PROPOSAL_COUNTS
from stages.proposals.sources import NetworkProposals, Proposer
from stages.runs.layout import RunLayout
from stages.runs.steps import SharedSteps, StepKey
from stages.training.solver import TrainingSummary


class FasterRCNN(Method[FasterFinetuneOptions]):
    name = NAME
    label = "Faster R-CNN"
    test_options = DetectOptions(per_image=100)
    display_threshold = 0.5  # the softmax probability
    finetune_options_type = FasterFinetuneOptions
    finetunes_distributed = True
    compress_options_type = CompressOptions
    variants: ClassVar[tuple[Variant, ...]] = (PLAIN, SVD)

    def trains_on(self, shared: SharedSteps) -> tuple[StepKey, ...]:
        """Nothing but the images: its network makes its own proposals."""
        return ()

    def tested_after(self, variant: Variant, split: str) -> tuple[StepKey, ...]:
        return (StepKey("compress" if variant.compressed else "finetune", self.name),)

    def proposer(self, run: RunLayout) -> Proposer:
        """Its region proposal network, inside the detector: no selective search."""
        return NetworkProposals("rpn")

    def model_proposer(self, model: Path, boxes: int, device: str = "auto") -> Proposer:
        return RpnProposer(model, boxes, device)

    def compress(self, run: RunLayout, options: CompressOptions) -> CompressSummary:
        trained = load_trained(run)
        extra = {k: trained.meta[k] for k in ("scales", "max_size", "test_scale", "rpn")}

        def save(path: Path, model: FasterRcnn) -> None:
            save_faster(path, model, trained.classes, **extra)

        return compress_file(trained, self.files(run).compressed, options, save)

    def finetune(
        self,
        dataset: Dataset,
        run: RunLayout,
        options: FasterFinetuneOptions,
        *,
        resume: bool = True,
        progress: Progress = SILENT,
    ) -> TrainingSummary:
        return finetune(dataset, run, options, resume, progress)

    def detector(
        self,
        run: RunLayout,
        options: DetectOptions,
        device: torch.device,
        *,
        variant: Variant = PLAIN,
        precision: str = "fp32",
    ) -> ImageDetector:
        detector, trained = faster_detector(run, device, variant.compressed, precision=precision)

        def find(image: np.ndarray, boxes: np.ndarray | None) -> tuple[ImageDetections, int]:
            if boxes is not None:
                raise ValueError("Faster R-CNN makes its own proposals")
            found = detector(image)
            return detect_from_class_boxes(found.class_boxes, found.probabilities, options), len(
                found.proposals
            )

        return ImageDetector(trained.classes, find)

    def test_inputs(self, run: RunLayout, split: str, *, variant: Variant = PLAIN) -> list[Path]:
        return self.detector_inputs(run, variant=variant)

    def detect_split(
        self,
        dataset: Dataset,
        run: RunLayout,
        options: DetectOptions,
        *,
        variant: Variant = PLAIN,
        device: torch.device,
        precision: str = "fp32",
    ) -> Iterator[ImageResult]:
        """The network on every image, proposals included; each image's conv, proposal and head seconds
        are timed. "Without box regression" scores the RPN's proposals themselves. The RPN's 2,000 best
        proposals an image come back too, for their recall (the head scores the first 300)."""
        detector, _ = faster_detector(
            run, device, variant.compressed, dataset.classes, precision, ranked=max(PROPOSAL_COUNTS)
        )
        return self._detections(dataset, detector, options)

    @staticmethod
    def _detections(
        dataset: Dataset, detector: FasterDetector, options: DetectOptions
    ) -> Iterator[ImageResult]:
        for record in dataset.images:
            found: Detected = detector(read_image(record.path))
            unmoved = np.broadcast_to(found.proposals[:, None], found.class_boxes.shape)
            conv, proposals, head = detector.last_timing
            yield ImageResult(
                record.image_id,
                detect_from_class_boxes(unmoved, found.probabilities, options),
                detect_from_class_boxes(found.class_boxes, found.probabilities, options),
                {"conv": conv, "proposals": proposals, "fc": head},
                found.ranked,
            )

    def test_seconds(self, run: RunLayout, split: str, results: Mapping[str, Any]) -> float | None:
        """The test pass less its proposal layer's seconds (the RPN's head and NMS), as for the methods
        that read proposals made before."""
        seconds, proposing = results.get("seconds_per_image"), results.get("proposals_seconds_per_image")
        return None if seconds is None or proposing is None else seconds - proposing

    def test_seconds_with_proposals(
        self, run: RunLayout, split: str, results: Mapping[str, Any]
    ) -> float | None:
        """The whole test pass: the RPN's proposals are made in it."""
        return results.get("seconds_per_image")

    def benchmark(self, settings: BenchSettings) -> Benchmark:
        return benchmark(settings, self.test_options)

    def finetune_options(self, given: Mapping[str, Any]) -> FasterFinetuneOptions:
        """``anchor_sizes``, ``anchor_ratios`` and ``test_post_nms`` set the RPN's options."""
        given = dict(given)
        rpn = {k: given.pop(k) for k in ("anchor_sizes", "anchor_ratios", "test_post_nms") if k in given}
        if rpn:
            given["rpn"] = RpnOptions(**rpn)
        return super().finetune_options(given)
