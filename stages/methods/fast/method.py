"""The FastRCNN method object: what the shared stages ask of it (``stages.methods.base.Method``)."""

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
from stages.methods.fast.benchmark import benchmark
from stages.methods.fast.compress import CompressSummary, compress_run
from stages.methods.fast.detector import FastDetector, fast_detector
from stages.methods.fast.finetune import finetune
from stages.methods.fast.network import NAME
from stages.methods.fast.options import FastFinetuneOptions, SamplingOptions
from stages.networks.inputs import read_image
from stages.networks.options import CompressOptions
from stages.proposals.propose import load_proposals
from stages.runs.layout import RunLayout
from stages.training.solver import TrainingSummary


class FastRCNN(Method[FastFinetuneOptions]):
    name = NAME
    label = "Fast R-CNN"
    test_options = DetectOptions(per_image=100)
    display_threshold = 0.5  # the softmax probability
    finetune_options_type = FastFinetuneOptions
    finetunes_distributed = True
    compress_options_type = CompressOptions
    variants: ClassVar[tuple[Variant, ...]] = (PLAIN, SVD)

    def finetune_options(self, given: Mapping[str, Any]) -> FastFinetuneOptions:
        """``scales``, ``max_size`` and ``aspect_grouping`` set the sampling; one scale caps the longer side
        at 1000, several at 2000 (section 4, "multi-scale")."""
        given = dict(given)
        sampling = {k: given.pop(k) for k in ("scales", "max_size", "aspect_grouping") if k in given}
        if sampling:
            scales = tuple(sampling.get("scales") or SamplingOptions.scales)
            given["sampling"] = SamplingOptions(
                scales=scales,
                max_size=sampling.get("max_size") or (1000 if len(scales) == 1 else 2000),
                aspect_grouping=sampling.get("aspect_grouping", SamplingOptions.aspect_grouping),
            )
        return super().finetune_options(given)

    def compress(self, run: RunLayout, options: CompressOptions) -> CompressSummary:
        return compress_run(run, options)

    def finetune(
        self,
        dataset: Dataset,
        run: RunLayout,
        options: FastFinetuneOptions,
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
        detector, trained = fast_detector(run, device, variant.compressed, precision=precision)

        def find(image: np.ndarray, boxes: np.ndarray | None) -> tuple[ImageDetections, int]:
            if boxes is None:
                raise ValueError("Fast R-CNN detects on proposals it is given")
            scores, class_boxes = detector(image, boxes)
            return detect_from_class_boxes(class_boxes, scores, options), len(boxes)

        return ImageDetector(trained.classes, find)

    def test_inputs(self, run: RunLayout, split: str, *, variant: Variant = PLAIN) -> list[Path]:
        return [*self.detector_inputs(run, variant=variant), run.proposals(split)]

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
        """The network on every image; each image's conv and fc seconds are timed. The network and the
        proposals are loaded before the first image is asked for, so that no image's time holds theirs."""
        detector, _ = fast_detector(run, device, variant.compressed, dataset.classes, precision)
        dataset, proposals = load_proposals(run, dataset)
        return self._detections(dataset, proposals, detector, options)

    @staticmethod
    def _detections(
        dataset: Dataset, proposals: Mapping[str, np.ndarray], detector: FastDetector, options: DetectOptions
    ) -> Iterator[ImageResult]:
        for record in dataset.images:
            boxes = proposals[record.image_id]
            scores, class_boxes = detector(read_image(record.path), boxes)
            unmoved = np.broadcast_to(boxes[:, None], class_boxes.shape)
            yield ImageResult(
                record.image_id,
                detect_from_class_boxes(unmoved, scores, options),
                detect_from_class_boxes(class_boxes, scores, options),
                {"conv": detector.last_timing[0], "fc": detector.last_timing[1]},
            )

    def benchmark(self, settings: BenchSettings) -> Benchmark:
        return benchmark(settings, self.test_options, settings.compress)
