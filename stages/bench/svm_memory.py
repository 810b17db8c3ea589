"""`rcnn bench svm-memory`: the peak memory of SVM training as the feature cache grows."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from stages.cache.files import CacheWriter, FeatureCache
from stages.core.progress import SILENT, Progress
from stages.methods.base import CachedFeatureMethod
from stages.runs.layout import RunLayout, manifest_path
from stages.training.matching import LabelledRegions


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
    run: RunLayout,
    method: CachedFeatureMethod,
    split: str,
    copies: Sequence[int],
    progress: Progress = SILENT,
) -> list[SvmMemoryRow]:
    """Train the SVMs, each time in a fresh process, on caches holding the split's images ``k`` times
    (renamed copies), and read the peak resident memory each process recorded in its manifest.

    Streaming means the peak should not grow with the cache: only a block of images and the hard-negative
    caches are held in memory.
    """
    results = []
    with tempfile.TemporaryDirectory(prefix="rcnn-bench-") as scratch:
        for k in copies:
            scratch_run = RunLayout(Path(scratch) / f"x{k}")
            target = method.files(scratch_run).features(split)
            with FeatureCache.of(method.files(run), split) as cache:
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
            arguments = ["train-svm", "--method", method.name, "--run", str(scratch_run), "--split", split]
            subprocess.run([sys.executable, "-m", "rcnn_cli", *arguments], check=True, capture_output=True)
            manifest = json.loads(manifest_path(method.files(scratch_run).svm).read_text())
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
