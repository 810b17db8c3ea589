"""`rcnn bench coco-read`: the seconds and memory of reading a large COCO annotation file."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.bench.common import in_fresh_process


@dataclass(frozen=True)
class CocoReadRow:
    """Reading a generated COCO split: the JSON's size, the seconds and peak memory of ``load_dataset``."""

    images: int
    annotations: int
    file_bytes: int
    seconds: float
    peak_rss_mb: float


def bench_coco_read(images: int, annotations: int, polygon_points: int = 24, seed: int = 0) -> CocoReadRow:
    """Write a COCO split of ``images`` images (empty files: reading never decodes them) and
    ``annotations`` objects, each with a ``polygon_points``-point segmentation as COCO's have (they are most
    of its 450 MB), and read it with ``load_dataset`` in a fresh process, whose peak memory the kernel
    reports (``wait4``)."""
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="rcnn-bench-") as scratch:
        root = Path(scratch)
        (root / "train").mkdir()
        (root / "annotations").mkdir()
        for k in range(images):
            (root / "train" / f"{k:012d}.jpg").touch()
        path = root / "annotations" / "instances_train.json"
        with open(path, "w", encoding="utf-8") as file:
            file.write('{"images": [')
            file.write(
                ",".join(
                    f'{{"id": {k}, "file_name": "{k:012d}.jpg", "width": 640, "height": 480}}'
                    for k in range(images)
                )
            )
            file.write('], "categories": [')
            file.write(",".join(f'{{"id": {c}, "name": "class{c}"}}' for c in range(1, 91, 9)))
            file.write('], "annotations": [')
            for start in range(0, annotations, 10_000):
                count = min(10_000, annotations - start)
                corners = rng.uniform(0, 300, (count, 2)).round(2)
                polygons = rng.uniform(0, 600, (count, 2 * polygon_points)).round(2)
                parts = []
                for n in range(count):
                    x, y = corners[n]
                    parts.append(
                        f'{{"id": {start + n + 1}, "image_id": {(start + n) % images}, '
                        f'"category_id": {1 + 9 * ((start + n) % 10)}, "bbox": [{x}, {y}, 120.5, 80.25], '
                        f'"area": 9000.0, "iscrowd": 0, "segmentation": [{polygons[n].tolist()}]}}'
                    )
                file.write(("," if start else "") + ",".join(parts))
            file.write("]}")
        code = (
            "import time; from stages.datasets.formats import load_dataset; t = time.perf_counter(); "
            f"d = load_dataset({str(root)!r}, 'train', format='coco'); print(time.perf_counter() - t, len(d))"
        )
        output, peak_mb = in_fresh_process(["-c", code], path)
        seconds, _ = output.strip().splitlines()[-1].split()  # after any warnings
        return CocoReadRow(images, annotations, path.stat().st_size, float(seconds), peak_mb)
