"""Benchmarks: throughput figures measured on the user's machine (`rcnn bench`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.errors import UserError
from stages.progress import SILENT, Progress
from stages.proposals import ProposalOptions, search_many
from stages.runs import manifest_path
from stages.svm import svm_path
from stages.voc import Dataset


@dataclass(frozen=True)
class ThroughputRow:
    """One configuration's measurement."""

    workers: int
    images: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds


def bench_proposals(
    dataset: Dataset,
    images: int = 40,
    options: ProposalOptions = ProposalOptions(),
    progress: Progress = SILENT,
) -> list[ThroughputRow]:
    """Selective search on the first ``images`` images of the split with 1 worker and with all cores.

    Process start-up is included, as a user of `rcnn propose` pays it too.
    """
    records = dataset.images[:images]
    jobs = [(r.image_id, str(r.path), options.mode, options.max_side, options.seed) for r in records]
    cores = os.cpu_count() or 1
    rows = []
    for workers in sorted({1, options.workers or cores}):
        started = time.perf_counter()
        with progress.task(f"selective search, {workers} workers", len(jobs), "img") as advance:
            for _, _, problem in search_many(jobs, workers):
                if problem is not None:
                    raise UserError(problem)
                advance()
        rows.append(ThroughputRow(workers, len(jobs), time.perf_counter() - started))
    return rows


@dataclass(frozen=True)
class SvmMemoryRow:
    """Peak memory of ``rcnn train-svm`` on a feature cache ``copies`` times the original's images."""

    copies: int
    rows: int
    file_bytes: int
    feature_bytes: int
    peak_rss_mb: float
    seconds: float


def bench_svm_memory(
    run: Path, method: str, split: str, copies: Sequence[int] = (1, 4), progress: Progress = SILENT
) -> list[SvmMemoryRow]:
    """Train the SVMs, each time in a fresh process, on caches holding the split's images ``k`` times
    (renamed copies), and read the peak resident memory each process recorded in its manifest.

    Streaming means the peak should not grow with the cache: only a block of images and the hard-negative
    caches are held in memory.
    """
    from stages.features import CacheWriter, FeatureCache, features_path
    from stages.regions import LabelledRegions

    source = features_path(run, method, split)
    command = f"rcnn extract-features --method {method} --split {split} --run {run}"
    results = []
    with tempfile.TemporaryDirectory(prefix="rcnn-bench-") as scratch:
        for k in copies:
            scratch_run = Path(scratch) / f"x{k}"
            target = features_path(scratch_run, method, split)
            with FeatureCache(source, command) as cache:
                columns = ["boxes", "gt_labels", "class_iou", "target_boxes", *cache.feature_points]
                dims = {name: cache.dim(name) for name in cache.feature_points}
                dtype = cache.h5[cache.feature_points[0]].dtype.name
                ids = [f"{copy}-{i}" for copy in range(k) for i in cache.image_ids]
                writer = CacheWriter(target, {"copies": k}, cache.classes, dims, dtype, ids)
                with progress.task(f"writing a {k}x cache", len(ids), "img") as advance:
                    for copy in range(k):
                        for image in cache.images(columns):
                            c = image.columns
                            regions = LabelledRegions(
                                c["boxes"], c["gt_labels"], c["class_iou"], c["target_boxes"]
                            )
                            writer.append(f"{copy}-{image.image_id}", regions, {n: c[n] for n in dims})
                            advance()
                feature_bytes = sum(writer.h5[n].size * writer.h5[n].dtype.itemsize for n in dims)
                rows = int(writer.h5["offsets"][-1])
                writer.finish({})
            started = time.perf_counter()
            arguments = ["train-svm", "--method", method, "--run", str(scratch_run), "--split", split]
            subprocess.run([sys.executable, "-m", "rcnn_cli", *arguments], check=True, capture_output=True)
            manifest = json.loads(manifest_path(svm_path(scratch_run, method)).read_text())
            results.append(
                SvmMemoryRow(
                    k,
                    rows,
                    target.stat().st_size,
                    feature_bytes,
                    manifest["results"]["peak_rss_mb"],
                    time.perf_counter() - started,
                )
            )
    return results


@dataclass(frozen=True)
class FeatureTiming:
    """Seconds an image to get the features of every proposal: the conv part (R-CNN: warping and
    conv1..pool5 of every region; SPP-net: conv1..conv5 once a scale) and the fc part (R-CNN: fc6, fc7;
    SPP-net: pyramid pooling, fc6, fc7)."""

    method: str
    scales: tuple[int, ...]
    conv: float
    fc: float

    @property
    def total(self) -> float:
        return self.conv + self.fc


def random_proposals(height: int, width: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """(count, 4) boxes inside the image, sides log-uniform between 16 px and the image's size."""
    sides = np.exp(rng.uniform(np.log(16), np.log([width, height]), (count, 2)))
    corners = rng.uniform(0, 1, (count, 2)) * (np.array([width, height]) - sides)
    return np.concatenate([corners, corners + sides], axis=1).astype(np.float32)


def bench_features(
    dataset: Dataset,
    backbone: str = "zf5",
    images: int = 5,
    proposals: int = 2000,
    image_size: int = 375,
    scale_sets: Sequence[Sequence[int]] = ((688,), (480, 576, 688, 864, 1200)),
    device: str = "auto",
    seed: int = 0,
    progress: Progress = SILENT,
) -> list[FeatureTiming]:
    """R-CNN's warped crops against SPP-net's shared conv5 on the same images, proposals and backbone.

    Images are resized so their shorter side is ``image_size`` (VOC's are about 375 x 500); proposals are
    ``proposals`` seeded random boxes an image (the work does not depend on where boxes are). The first
    image's first 64 proposals are run once untimed, so one-off start-up costs are not counted. Weights
    are random: speed does not depend on them.
    """
    import cv2
    import torch

    from stages.backbones import build_backbone
    from stages.images import pick_device, read_image, to_network_input
    from stages.sppnet import SppNet, scale_factors
    from stages.warp import warp_regions

    torch.manual_seed(seed)
    chosen = pick_device(device)
    net = build_backbone(backbone).to(chosen).eval()
    spp = SppNet(net).to(chosen).eval()
    spec = net.spec
    rng = np.random.default_rng(seed)
    work = []
    for record in dataset.images[:images]:
        image = read_image(record.path)
        factor = image_size / min(image.shape[:2])
        image = cv2.resize(image, (round(image.shape[1] * factor), round(image.shape[0] * factor)))
        work.append((image, random_proposals(*image.shape[:2], proposals, rng)))
    if not work:
        raise UserError(f"{dataset.root}: split {dataset.split!r} has no images")

    def synchronize() -> None:
        if chosen.type == "cuda":
            torch.cuda.synchronize(chosen)

    def rcnn(image: np.ndarray, boxes: np.ndarray) -> tuple[float, float]:
        conv = fc = 0.0
        tensor = to_network_input(image, chosen)
        for chunk in torch.as_tensor(boxes, device=chosen).split(256):
            started = time.perf_counter()
            crops = warp_regions(tensor, chunk, spec.input_size, spec.context_padding)
            pooled = net.pool5(net.conv(crops.contiguous(memory_format=torch.channels_last)))
            synchronize()
            middle = time.perf_counter()
            net.head(pooled)
            synchronize()
            conv, fc = conv + middle - started, fc + time.perf_counter() - middle
        return conv, fc

    def sppnet(image: np.ndarray, boxes: np.ndarray, scales: Sequence[int]) -> tuple[float, float]:
        factors = scale_factors(*image.shape[:2], scales)
        started = time.perf_counter()
        maps = spp.conv5(image, factors, chosen)
        synchronize()
        middle = time.perf_counter()
        spp.head(spp.pyramid(maps, torch.as_tensor(boxes, device=chosen), factors))
        synchronize()
        return middle - started, time.perf_counter() - middle

    runs = [("rcnn", (), lambda im, bx: rcnn(im, bx))]
    runs += [("spp", tuple(s), lambda im, bx, s=s: sppnet(im, bx, s)) for s in scale_sets]
    results = []
    with torch.no_grad():
        for method, scales, measure in runs:
            measure(work[0][0], work[0][1][:64])  # warm-up: first-call allocations, kernel choice
            conv = fc = 0.0
            label = f"{method} {','.join(map(str, scales))}".strip()
            with progress.task(f"features: {label}", len(work), "img") as advance:
                for image, boxes in work:
                    c, f = measure(image, boxes)
                    conv, fc = conv + c, fc + f
                    advance()
            results.append(FeatureTiming(method, scales, conv / len(work), fc / len(work)))
    return results
