"""R-CNN (Girshick et al., CVPR 2014): warped proposals through a fine-tuned network, linear SVMs on fc7,
box regression on pool5.

- ``finetune``: the whole network on warped windows (section 2.3);
- ``features``: pool5 and fc7 of every region, cached (section 2.2);
- the SVMs, the regressors and detection from the cache are the shared ``CachedFeatureMethod``'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from stages.datasets.records import Dataset
from stages.features import ExtractSummary, RegionFeatures
from stages.methods.base import CachedFeatureMethod, options_from
from stages.methods.rcnn.features import ExtractOptions, RegionExtractor, extract_features, load_finetuned
from stages.methods.rcnn.finetune import NAME, FinetuneOptions, finetune
from stages.progress import SILENT, Progress
from stages.runs import RunLayout
from stages.training import TrainingSummary


class RCNN(CachedFeatureMethod[FinetuneOptions, ExtractOptions]):
    name = NAME
    label = "R-CNN"
    region_feature = "pool5"

    def finetune_options(self, given: Mapping[str, Any]) -> FinetuneOptions:
        return options_from(FinetuneOptions, given, "R-CNN fine-tuning")

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

    def extract_options(self, given: Mapping[str, Any]) -> ExtractOptions:
        return options_from(ExtractOptions, given, "R-CNN feature extraction")

    def extract_features(
        self, dataset: Dataset, run: RunLayout, options: ExtractOptions, progress: Progress = SILENT
    ) -> ExtractSummary:
        return extract_features(dataset, run, options, progress)

    def region_features(
        self, run: RunLayout, classes: tuple[str, ...], device: torch.device
    ) -> RegionFeatures:
        return RegionExtractor(load_finetuned(run, classes).module, device)
