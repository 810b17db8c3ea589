"""R-CNN (Girshick et al., CVPR 2014): warped proposals through a fine-tuned network, linear SVMs on fc7,
box regression on pool5.

- ``finetune``: the whole network on warped windows (section 2.3);
- ``features``: pool5 and fc7 of every region, cached (section 2.2);
- the SVMs, the regressors and detection from the cache are the shared ``CachedFeatureMethod``'s.
"""

from __future__ import annotations

import torch

from stages.cache.features import ExtractSummary, RegionFeatures
from stages.core.progress import SILENT, Progress
from stages.datasets.records import Dataset
from stages.methods.base import CachedFeatureMethod
from stages.methods.rcnn.features import ExtractOptions, RegionExtractor, extract_features, load_finetuned
from stages.methods.rcnn.finetune import NAME, FinetuneOptions, finetune
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
        self, dataset: Dataset, run: RunLayout, options: ExtractOptions, progress: Progress = SILENT
    ) -> ExtractSummary:
        return extract_features(dataset, run, options, progress)

    def region_features(
        self, run: RunLayout, classes: tuple[str, ...], device: torch.device, precision: str = "fp32"
    ) -> RegionFeatures:
        return RegionExtractor(load_finetuned(run, classes).module, device, precision=precision)
