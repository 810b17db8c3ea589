"""`rcnn bench detect-memory`: the peak memory of ``rcnn detect`` as images grow."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2

from stages.bench.common import in_fresh_process
from stages.core.progress import SILENT, Progress
from stages.datasets.image_files import read_bgr
from stages.runs.layout import RunLayout


@dataclass(frozen=True)
class DetectMemoryRow:
    """``rcnn detect`` on one image size: the JPEG's size on disk, the process's peak resident memory."""

    width: int
    height: int
    file_bytes: int
    peak_rss_mb: float
    seconds: float


def bench_detect_memory(
    run: RunLayout, method: str, image: Path, long_sides: Sequence[int], progress: Progress = SILENT
) -> list[DetectMemoryRow]:
    """Peak resident memory of ``rcnn detect`` with ``method`` on ``image`` as it is and enlarged
    (bicubic, saved as JPEG) to each longer side: each size in a fresh process, whose peak the kernel
    reports when it ends (``wait4``)."""
    source = read_bgr(image)
    height, width = source.shape[:2]
    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="rcnn-bench-") as scratch,
        progress.task("rcnn detect in a fresh process", len(long_sides) + 1, "size") as advance,
    ):
        for side in (max(height, width), *long_sides):
            path, factor = Path(image), side / max(height, width)
            if side != max(height, width):
                path = Path(scratch) / f"{side}.jpg"
                size = (round(width * factor), round(height * factor))
                cv2.imwrite(str(path), cv2.resize(source, size, interpolation=cv2.INTER_CUBIC))
            command = ["-m", "rcnn_cli", "detect", str(path), "--run", str(run.root), "--method", method]
            started = time.perf_counter()
            _, peak_mb = in_fresh_process([*command, "--out", str(Path(scratch) / "out")], path)
            rows.append(
                DetectMemoryRow(
                    round(width * factor),
                    round(height * factor),
                    path.stat().st_size,
                    peak_mb,
                    time.perf_counter() - started,
                )
            )
            advance()
    return rows
