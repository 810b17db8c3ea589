"""R-CNN's features (Girshick et al., CVPR 2014, section 2.2): every region warped through the fine-tuned
network, pool5 (for box regression) and fc7 (for the SVMs), cached per split."""

from __future__ import annotations

import time

import numpy as np
import torch

from stages.cache.features import CacheRecipe, ExtractSummary, fill_cache, finish_cache
from stages.core.progress import SILENT, Progress
from stages.datasets.records import Dataset
from stages.methods.rcnn.options import ExtractOptions
from stages.networks.backbones import Classifier
from stages.networks.inputs import to_network_input
from stages.networks.models import TrainedModel, load_model
from stages.networks.precision import autocast, check_supported
from stages.networks.warp import REGION_PIXELS, warp_batch, warp_regions
from stages.proposals.propose import load_proposals
from stages.runs.devices import synchronize
from stages.runs.layout import RunLayout
from stages.runs.processes import processes

NAME = "rcnn"


def load_finetuned(run: RunLayout, classes: tuple[str, ...] | None = None) -> TrainedModel[Classifier]:
    """The run's fine-tuned R-CNN network, checked to be trained on ``classes`` when given."""
    return load_model(
        run.method(NAME).finetune.model,
        NAME,
        lambda meta: Classifier.from_meta(meta, len(meta["classes"]) + 1),
        command=run.command_for(run.method(NAME).finetune.model),
        classes=classes,
    )


class RegionExtractor:
    """pool5 and fc7 of warped regions: the R-CNN feature pipeline, ``batch_size`` windows at a time,
    the network in ``precision`` (``stages.networks.precision``). ``last_timing`` holds the seconds of
    the last call's conv part (warping, conv1..pool5) and fc part (fc6, fc7)."""

    def __init__(
        self, model: Classifier, device: torch.device, batch_size: int = 256, precision: str = "fp32"
    ):
        check_supported(precision, device)
        self.backbone = model.backbone.to(device).eval()
        self.device, self.batch_size, self.precision = device, batch_size, precision
        self.last_timing = (0.0, 0.0)

    @torch.no_grad()
    def __call__(self, image: np.ndarray, boxes: np.ndarray) -> dict[str, torch.Tensor]:
        """(H, W, 3) uint8 image, (N, 4) boxes -> {"pool5": (N, P), "fc7": (N, D)} float32 on the CPU."""
        spec = self.backbone.spec
        whole = image.shape[0] * image.shape[1] <= REGION_PIXELS  # else warp_batch bounds the memory
        tensor = to_network_input(image, self.device) if whole else None
        boxes_t = torch.as_tensor(np.asarray(boxes, dtype=np.float32), device=self.device)
        pool5, fc7 = [], []
        conv_seconds = fc_seconds = 0.0
        for chunk in boxes_t.split(self.batch_size):
            started = time.perf_counter()
            if tensor is not None:
                crops = warp_regions(tensor, chunk, spec.input_size, spec.context_padding)
            else:
                on_image = np.zeros(len(chunk), np.int64)
                crops = warp_batch(
                    {0: image}, on_image, chunk.cpu().numpy(), spec.input_size, spec.context_padding
                )
                crops = crops.to(self.device)
            with autocast(self.precision, self.device):
                pooled = self.backbone.pooled(crops)
                synchronize(self.device)
                middle = time.perf_counter()
                features = self.backbone.head(pooled)
            pool5.append(pooled.float().cpu())
            fc7.append(features.float().cpu())
            conv_seconds, fc_seconds = (
                conv_seconds + middle - started,
                fc_seconds + time.perf_counter() - middle,
            )
        self.last_timing = (conv_seconds, fc_seconds)
        if not pool5:
            return {"pool5": torch.zeros(0, spec.pool5_dim), "fc7": torch.zeros(0, spec.fc_dim)}
        return {"pool5": torch.cat(pool5), "fc7": torch.cat(fc7)}


def extract_features(
    dataset: Dataset, run: RunLayout, options: ExtractOptions = ExtractOptions(), progress: Progress = SILENT
) -> ExtractSummary:
    """Cache pool5 and fc7 of every ground-truth box and proposal of the split to the method's HDF5 file;
    under ``torchrun`` each process its shard of the images, rank 0 merging them (``fill_cache``)."""
    started = time.perf_counter()
    with processes(options.device) as procs:
        trained = load_finetuned(run, dataset.classes)
        dataset, proposals = load_proposals(run, dataset)
        spec = trained.module.backbone.spec
        proposals_file = run.proposals(dataset.split)
        dims = {"fc7": spec.fc_dim, "pool5": spec.pool5_dim}
        recipe = CacheRecipe.of(
            NAME, options, dataset, proposals_file, trained.path, dims, {"backbone": spec.name}
        )
        target = run.method(NAME).features(dataset.split)
        computed, seconds = fill_cache(
            dataset,
            proposals,
            target,
            recipe,
            RegionExtractor(trained.module, procs.device, options.batch_size, options.precision),
            workers=options.workers,
            description=f"R-CNN features ({spec.name}, {procs.device.type}, {options.precision})",
            progress=progress,
            procs=procs,
        )
        summary = None
        if procs.writer:
            summary = finish_cache(
                target,
                dataset,
                recipe,
                computed=computed,
                extract_seconds=seconds,
                seconds=time.perf_counter() - started,
            )
        return procs.from_writer(summary)
