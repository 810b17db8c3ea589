"""The SPPNet method object: what the shared stages ask of it (``stages.methods.base.Method``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch

from stages.cache.features import ExtractSummary, RegionFeatures
from stages.core.progress import SILENT, Progress
from stages.datasets.records import Dataset
from stages.methods.base import Benchmark, BenchSettings, CachedFeatureMethod
from stages.methods.spp.benchmark import benchmark
from stages.methods.spp.features import SppExtractor, extract_features
from stages.methods.spp.finetune import finetune
from stages.methods.spp.network import NAME, load_spp
from stages.methods.spp.options import SppExtractOptions, SppFinetuneOptions
from stages.runs.layout import RunLayout
from stages.runs.steps import SharedSteps, Step
from stages.training.solver import TrainingSummary

_CONV_LAYERS = (
    "SPP-net fine-tunes on cached pyramids; choose the conv layers with "
    "rcnn extract-features --method spp --before-finetuning --backbone/--weights"
)


class SPPNet(CachedFeatureMethod[SppFinetuneOptions, SppExtractOptions]):
    name = NAME
    label = "SPP-net"
    region_feature = "pyramid"
    finetune_options_type = SppFinetuneOptions
    extract_options_type = SppExtractOptions
    option_hints: ClassVar[Mapping[str, str]] = {"backbone": _CONV_LAYERS, "weights": _CONV_LAYERS}

    def steps(self, tables: Mapping[str, Any], shared: SharedSteps) -> list[Step]:
        """Fine-tuning reads the training split's pyramids (section 4.1): they are cached first, and the
        cache completed with fc7 after it."""
        pyramids = self.features_step(
            tables["features"],
            shared,
            shared.train,
            (shared.proposals(shared.train), *shared.backbone_for(tables["features"])),
            before_finetuning=True,
        )
        return [
            pyramids,
            self.finetune_step(tables["finetune"], shared, (pyramids.key,)),
            *self.cache_steps(tables, shared, completes=True),
        ]

    def finetune(
        self,
        dataset: Dataset,
        run: RunLayout,
        options: SppFinetuneOptions,
        *,
        resume: bool = True,
        progress: Progress = SILENT,
    ) -> TrainingSummary:
        return finetune(dataset, run, options, resume, progress)

    def extract_features(
        self,
        dataset: Dataset,
        run: RunLayout,
        options: SppExtractOptions,
        progress: Progress = SILENT,
        *,
        before_finetuning: bool = False,
    ) -> ExtractSummary:
        """Before fine-tuning, the pyramids it reads; after, fc7 added (``extract_features``)."""
        return extract_features(dataset, run, options, progress, before_finetuning=before_finetuning)

    def extraction_network(self, run: RunLayout, *, before_finetuning: bool = False) -> Path:
        """The fine-tuned network; before fine-tuning, the backbone, whose conv5 the pyramids need."""
        return run.pretrain.model if before_finetuning else self.files(run).finetune.model

    def region_features(
        self, run: RunLayout, classes: tuple[str, ...], device: torch.device, precision: str = "fp32"
    ) -> RegionFeatures:
        """fc7 and the pyramid at the scales and window size of the cache fine-tuning read."""
        trained = load_spp(run, classes)
        made = trained.meta["trained_on"]
        return SppExtractor(trained.module.net, made["scales"], made["window_size"], device, True, precision)

    def benchmark(self, settings: BenchSettings) -> Benchmark:
        return benchmark(settings)
