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
