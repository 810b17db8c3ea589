"""SPP-net's features (He et al., ECCV 2014, section 4): conv5 once an image a scale, every region pooled
by the spatial pyramid at its best scale; the pyramid (for fine-tuning and box regression) and, once the
fc layers are fine-tuned, fc7 (for the SVMs), cached per split."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stages.cache.features import CacheRecipe, ExtractSummary, fill_cache, finish_cache
from stages.cache.files import FeatureCache, add_feature_point
from stages.core.errors import UserError
from stages.core.progress import SILENT, Progress
from stages.datasets.records import Dataset
from stages.methods.spp.network import FINE_TUNED, NAME, SppNet, load_spp, scale_factors
from stages.methods.spp.options import SppExtractOptions
from stages.networks.backbones import resolve_backbone
from stages.networks.precision import autocast, check_supported
from stages.proposals.propose import load_proposals
from stages.runs.devices import synchronize
from stages.runs.layout import RunLayout, read_manifest
from stages.runs.processes import Processes, processes

log = logging.getLogger("rcnn")


class SppExtractor:
    """Pyramid features (and fc7 once the fc layers are fine-tuned) of windows, conv5 once a scale.
    ``last_timing`` holds the seconds of the last call's conv part (conv1..conv5 at every scale) and fc
    part (pyramid pooling, fc6, fc7)."""

    def __init__(
        self,
        net: SppNet,
        scales: Sequence[int],
        window_size: int,
        device: torch.device,
        with_fc7: bool,
        precision: str = "fp32",
    ):
        check_supported(precision, device)
        self.net = net.to(device).eval()
        self.scales, self.window_size = tuple(scales), window_size
        self.device, self.with_fc7, self.precision = device, with_fc7, precision
        self.last_timing = (0.0, 0.0)

    @torch.no_grad()
    def __call__(self, image: np.ndarray, boxes: np.ndarray) -> dict[str, torch.Tensor]:
        """(H, W, 3) uint8 image, (N, 4) boxes -> {"pyramid": (N, P)[, "fc7": (N, D)]} on the CPU."""
        height, width = image.shape[:2]
        factors = scale_factors(height, width, self.scales)
        boxes_t = torch.as_tensor(np.asarray(boxes, np.float32), device=self.device)
        started = time.perf_counter()
        with autocast(self.precision, self.device):
            maps = self.net.conv5(image, factors, self.device)
            synchronize(self.device)
            middle = time.perf_counter()
            pyramid = self.net.pyramid(maps, boxes_t, factors, self.window_size)
            fc7 = self.net.head(pyramid) if self.with_fc7 else None
        found = {"pyramid": pyramid.float().cpu()}
        if fc7 is not None:
            found["fc7"] = fc7.float().cpu()
        self.last_timing = (middle - started, time.perf_counter() - middle)
        return found


_FIRST_PASS = "rcnn extract-features --method spp --before-finetuning"
"""The pass that caches the pyramids fine-tuning reads."""


def extract_features(
    dataset: Dataset,
    run: RunLayout,
    options: SppExtractOptions = SppExtractOptions(),
    progress: Progress = SILENT,
    *,
    before_finetuning: bool = False,
) -> ExtractSummary:
    """Cache the pyramid and fc7 of every region of the split, from the fine-tuned network; with
    ``before_finetuning``, the pyramids alone, from the conv layers of ``options.backbone`` and
    ``options.weights`` (default: the run's backbone), for fine-tuning to read.

    After fine-tuning, a pyramid-only cache of the split made by the same conv layers with the same
    settings (the one fine-tuning read) is reused: only fc7 is computed, from its stored pyramids (by rank
    0 alone under ``torchrun``; conv5 passes are spread over the processes, ``fill_cache``).
    """
    started = time.perf_counter()
    with processes(options.device) as procs:
        summary = _extract(dataset, run, options, progress, procs, started, before_finetuning)
        return procs.from_writer(summary)


def _extract(
    dataset: Dataset,
    run: RunLayout,
    options: SppExtractOptions,
    progress: Progress,
    procs: Processes,
    started: float,
    before_finetuning: bool,
) -> ExtractSummary | None:
    """``extract_features`` in one of the run's processes; the summary on rank 0, None elsewhere."""
    device = procs.device
    check_supported(options.precision, device)
    trained_on = None
    model_path: Path | None
    conv: dict[str, str | None]
    if not before_finetuning:
        finetuned = run.method(NAME).finetune.model
        if not finetuned.exists():
            raise UserError(
                f"{finetuned}: not found; fc7 needs it: make it with "
                f"`{run.command_for(finetuned, dataset.root)}`, which reads the pyramids of `{_FIRST_PASS}`"
            )
        trained = load_spp(run, dataset.classes)
        net, with_fc7, model_path = trained.module.net, True, trained.path
        conv = {"backbone": trained.backbone, "weights": FINE_TUNED}
        trained_on = trained.meta.get("trained_on")
        if tuple(trained.meta["levels"]) != tuple(options.levels):
            raise UserError(
                f"{model_path}: fine-tuned on levels {trained.meta['levels']}, not {list(options.levels)}"
            )
    else:
        backbone, weights_file = resolve_backbone(run, options.backbone, options.weights)
        net, with_fc7, model_path = SppNet(backbone, options.levels), False, weights_file
        conv = {"backbone": backbone.spec.name, "weights": options.weights}  # None: the run's backbone
    dataset, proposals = load_proposals(run, dataset)
    proposals_file = run.proposals(dataset.split)
    recipe = CacheRecipe.of(
        NAME,
        options,
        dataset,
        proposals_file,
        model_path,
        {"pyramid": net.pyramid_dim, **({"fc7": net.spec.fc_dim} if with_fc7 else {})},
        {"backbone": net.spec.name, "with_fc7": with_fc7},
        scales=list(options.scales),
        window_size=options.window_size,
        levels=list(options.levels),
        conv=conv,
    )
    stamp = recipe.stamp
    target = run.method(NAME).features(dataset.split)
    if trained_on and _holds_pyramids(target, stamp, trained_on):
        if not procs.writer:
            procs.wait()
            return None
        earlier = read_manifest(target)
        net.to(device).eval()
        add_feature_point(
            target,
            "fc7",
            net.spec.fc_dim,
            lambda pyramid: _fc7(net, pyramid, device, options.precision),
            "pyramid",
            {"stamp": json.dumps(stamp, sort_keys=True, default=str), **recipe.attrs},
            progress,
            f"SPP-net fc7 from the cached pyramids ({net.spec.name}, {device.type})",
        )
        seconds = time.perf_counter() - started
        summary = finish_cache(
            target,
            dataset,
            recipe,
            computed=0,
            extract_seconds=seconds,
            seconds=seconds + (earlier["seconds"] if earlier else 0.0),
        )
        procs.wait()
        return summary
    computed, extract_seconds = fill_cache(
        dataset,
        proposals,
        target,
        recipe,
        SppExtractor(net, options.scales, options.window_size, device, with_fc7, options.precision),
        workers=options.workers,
        description=(
            f"SPP-net features ({net.spec.name}, scales {','.join(map(str, options.scales))}, "
            f"{device.type}, {options.precision})"
        ),
        progress=progress,
        procs=procs,
    )
    if not procs.writer:
        return None
    return finish_cache(
        target,
        dataset,
        recipe,
        computed=computed,
        extract_seconds=extract_seconds,
        seconds=time.perf_counter() - started,
    )


def _holds_pyramids(path: Path, stamp: Mapping[str, Any], trained_on: Mapping[str, Any]) -> bool:
    """Whether ``path`` is a complete pyramid-only cache made with ``stamp``'s settings by the conv layers
    named in ``trained_on`` (the stamp of the cache the fine-tuned model was trained on)."""
    if not path.exists():
        return False
    try:
        with FeatureCache(path, "") as cache:
            found = json.loads(cache.h5.attrs["stamp"])
            pyramid_only = cache.feature_points == ("pyramid",)
    except UserError:
        return False
    return pyramid_only and found == {**stamp, "conv": trained_on["conv"], "model": trained_on["model"]}


@torch.no_grad()
def _fc7(net: SppNet, pyramid: np.ndarray, device: torch.device, precision: str) -> np.ndarray:
    """(n, pyramid_dim) stored pyramids -> (n, fc_dim) fc7 computed in ``precision``, stored as the
    pyramids are."""
    with autocast(precision, device):
        found = net.head(torch.from_numpy(pyramid.astype(np.float32)).to(device))
    return found.float().cpu().numpy().astype(pyramid.dtype)
