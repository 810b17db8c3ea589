"""The RCNN method object: what the shared stages ask of it (``stages.methods.base.Method``)."""

from __future__ import annotations

import torch

from stages.cache.features import ExtractSummary, RegionFeatures
from stages.core.errors import UserError
from stages.core.progress import SILENT, Progress
from stages.datasets.records import Dataset
from stages.methods.base import Benchmark, BenchSettings, CachedFeatureMethod
from stages.methods.rcnn.benchmark import benchmark
from stages.methods.rcnn.features import RegionExtractor, extract_features, load_finetuned
from stages.methods.rcnn.finetune import NAME, finetune
from stages.methods.rcnn.options import ExtractOptions, FinetuneOptions
from stages.runs.layout import RunLayout
from stages.training.solver import TrainingSummary


class RCNN(CachedFeatureMethod[FinetuneOptions, ExtractOptions]):
    name = NAME
    label = "R-CNN"
    region_feature = "pool5"
    finetune_options_type = FinetuneOptions
    extract_options_type = ExtractOptions

    def finetune(
        self,
        dataset: Dataset,
        run: RunLayout,
        options: FinetuneOptions,
        *,
        resume: bool = True,
        progress: Progress = SILENT,
    ) -> TrainingSummary:
        return finetune(dataset, run, options, resume, progress)

    def extract_features(
        self,
        dataset: Dataset,
        run: RunLayout,
        options: ExtractOptions,
        progress: Progress = SILENT,
        *,
        before_finetuning: bool = False,
    ) -> ExtractSummary:
        if before_finetuning:
            raise UserError(
                "--before-finetuning: R-CNN's features are its fine-tuned network's; it has one pass"
            )
        return extract_features(dataset, run, options, progress)

    def region_features(
        self, run: RunLayout, classes: tuple[str, ...], device: torch.device, precision: str = "fp32"
    ) -> RegionFeatures:
        return RegionExtractor(load_finetuned(run, classes).module, device, precision=precision)

    def benchmark(self, settings: BenchSettings) -> Benchmark:
        return benchmark(settings)
