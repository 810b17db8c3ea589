"""`rcnn bench features`: the feature pass of every method with a feature cache (R-CNN's warped crops
against SPP-net's shared conv5, at each set of scales) on the same images, proposals and backbone."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch

from stages.bench.common import prepared_images, timed
from stages.core.progress import SILENT, Progress
from stages.datasets.records import Dataset
from stages.methods import METHODS
from stages.methods.base import PLAIN, BenchSettings, Measure
from stages.runs.devices import pick_device


@dataclass(frozen=True)
class FeatureTiming:
    """Seconds an image to get the features of every proposal: the conv part (R-CNN: warping and
    conv1..pool5 of every region; SPP-net: conv1..conv5 once a scale) and the fc part (R-CNN: fc6, fc7;
    SPP-net: pyramid pooling, fc6, fc7). ``scales``: SPP-net's; none for a method without scales."""

    method: str
    scales: tuple[int, ...]
    conv: float
    fc: float

    @property
    def total(self) -> float:
        return self.conv + self.fc


def bench_features(
    dataset: Dataset,
    backbone: str,
    images: int,
    proposals: int,
    image_size: int,
    scale_sets: Sequence[Sequence[int]],
    device: str,
    seed: int = 0,
    progress: Progress = SILENT,
) -> list[FeatureTiming]:
    """The feature pass of each method with a feature cache (``Method.benchmark``, the code
    ``extract-features`` runs), once for each of ``scale_sets`` where the method takes scales (SPP-net),
    on the same images, proposals and backbone.

    Images are resized so their shorter side is ``image_size`` (VOC's are about 375 x 500). Weights are
    random: speed does not depend on them.
    """
    torch.manual_seed(seed)
    chosen = pick_device(device)
    work = prepared_images(dataset, images, image_size, proposals, seed)
    measures: dict[tuple[str, tuple[int, ...]], Measure] = {}
    for name in METHODS.with_command("extract-features"):
        method = METHODS[name]
        scaled = "scales" in {f.name for f in fields(method.extract_options_type)}  # type: ignore[attr-defined]
        for scales in map(tuple, scale_sets) if scaled else [()]:
            settings = BenchSettings(backbone, 20, image_size, work, chosen, scales=scales or None, seed=seed)
            measures[name, scales] = method.benchmark(settings).test[PLAIN]
    timings = timed(
        measures, work, f"features: {', '.join(METHODS.with_command('extract-features'))}", progress
    )
    return [FeatureTiming(method, scales, *timing) for (method, scales), timing in timings.items()]
