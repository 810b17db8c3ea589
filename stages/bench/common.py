"""What the benchmarks share: the split's images resized with seeded random proposals, the passes timed in
turn, a command's peak memory in a process of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
import torch

from stages.core.errors import UserError
from stages.core.progress import Progress
from stages.datasets.records import Dataset
from stages.networks.inputs import read_image


def in_fresh_process(arguments: list[str], subject: Path) -> tuple[str, float]:
    """Run ``python ARGUMENTS`` in a fresh process: (its standard output, its peak resident memory in
    MiB, as the kernel reports it when the process ends: ``wait4``). UserError naming ``subject`` with
    the process's last line if it fails."""
    with tempfile.TemporaryFile("w+") as output:
        process = subprocess.Popen(
            [sys.executable, *arguments], stdout=output, stderr=subprocess.STDOUT, text=True
        )
        _, status, usage = os.wait4(process.pid, 0)
        output.seek(0)
        text = output.read()
    if os.waitstatus_to_exitcode(status) != 0:
        last = text.strip().splitlines()[-1] if text.strip() else "no output"
        raise UserError(f"{subject}: the measured process failed: {last}")
    return text, usage.ru_maxrss / 1024  # kilobytes on Linux


def random_proposals(height: int, width: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """(count, 4) boxes inside the image, sides log-uniform between 16 px and the image's size."""
    sides = np.exp(rng.uniform(np.log(16), np.log([width, height]), (count, 2)))
    corners = rng.uniform(0, 1, (count, 2)) * (np.array([width, height]) - sides)
    return np.concatenate([corners, corners + sides], axis=1).astype(np.float32)


def prepared_images(
    dataset: Dataset, images: int, image_size: int, proposals: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The split's first ``images`` images resized to shorter side ``image_size``, with ``proposals``
    seeded random boxes each (the work does not depend on where boxes are)."""
    rng = np.random.default_rng(seed)
    work = []
    for record in dataset.images[:images]:
        image = read_image(record.path)
        factor = image_size / min(image.shape[:2])
        image = cv2.resize(image, (round(image.shape[1] * factor), round(image.shape[0] * factor)))
        height, width = image.shape[:2]
        work.append((image, random_proposals(height, width, proposals, rng)))
    if not work:
        raise UserError(f"{dataset.root}: split {dataset.split!r} has no images")
    return work


Key = TypeVar("Key", bound=Hashable)


def timed(
    measures: Mapping[Key, Callable], work, label: str, progress: Progress
) -> dict[Key, tuple[float, float]]:
    """Mean (conv, fc) seconds an image of each ``measure(image, boxes)``, after one untimed warm-up call
    of each on 64 boxes (first-call allocations and kernel choice are not counted). The measures take
    their turns on each image, so that the machine's drift (up to 2x from hour to hour on this
    project's machines) falls on each alike and their comparison holds."""
    totals = {name: [0.0, 0.0] for name in measures}
    with torch.no_grad():
        for measure in measures.values():
            measure(work[0][0], work[0][1][:64])
        with progress.task(label, len(work) * len(measures), "pass") as advance:
            for image, boxes in work:
                for name, measure in measures.items():
                    conv, fc = measure(image, boxes)
                    totals[name][0] += conv
                    totals[name][1] += fc
                    advance()
    return {name: (conv / len(work), fc / len(work)) for name, (conv, fc) in totals.items()}
