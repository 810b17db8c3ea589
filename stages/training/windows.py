"""Mini-batches of warped windows for classification training (R-CNN's window data layer), used by
pre-training (object crops) and R-CNN's fine-tuning (proposals).

Batch k is drawn from its own generator seeded by (seed, k), so batches do not depend on the worker that
makes them or on where a resumed run restarts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from stages.networks.inputs import ImageCache
from stages.networks.warp import warp_batch
from stages.training.balanced_sampling import BalancedSampler


def jitter_boxes(boxes: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """(B, 4) boxes with centres moved by up to ``amount`` of their size and sides scaled by up to
    exp(+-amount): the crop jitter of classification pre-training."""
    if amount <= 0:
        return boxes
    sizes = boxes[:, 2:] - boxes[:, :2]
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2 + rng.uniform(-amount, amount, sizes.shape) * sizes
    half = sizes * np.exp(rng.uniform(-amount, amount, sizes.shape)) / 2
    return np.concatenate([centres - half, centres + half], axis=1).astype(np.float32)


class WindowBatches:
    """Warped-window batches: each batch draws its rows from ``foreground`` and ``background`` with
    ``sampler``.

    paths: the images; image_index (M,), boxes (M, 4), labels (M,): every window; foreground, background:
    row indices (pre-training puts every object crop in ``foreground``). Calling with an iteration gives
    ((B, 3, size, size) crops, (B,) int64 labels).
    """

    def __init__(
        self,
        paths: Sequence[Path],
        image_index: np.ndarray,
        boxes: np.ndarray,
        labels: np.ndarray,
        foreground: np.ndarray,
        background: np.ndarray,
        sampler: BalancedSampler,
        size: int,
        padding: int,
        *,
        jitter: float = 0.0,
        mirror: bool = True,
        seed: int = 0,
    ):
        self.paths = list(paths)
        self.image_index, self.boxes, self.labels = image_index, boxes, labels
        self.foreground, self.background, self.sampler = foreground, background, sampler
        self.size, self.padding = size, padding
        self.jitter, self.mirror, self.seed = jitter, mirror, seed
        self.cache = ImageCache()

    def __call__(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, iteration])
        rows = self.sampler(self.foreground, self.background, rng)
        used = np.unique(self.image_index[rows])
        images = {index: self.cache(self.paths[index]) for index in used}
        boxes = jitter_boxes(self.boxes[rows], self.jitter, rng)
        flips = rng.random(len(rows)) < 0.5 if self.mirror else None
        crops = warp_batch(images, self.image_index[rows], boxes, self.size, self.padding, flips)
        return crops, torch.as_tensor(self.labels[rows], dtype=torch.int64)
