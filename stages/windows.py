"""Mini-batches of warped windows for classification training (R-CNN's window data layer).

Batch k is drawn from its own generator seeded by (seed, k), so batches do not depend on the worker that
makes them or on where a resumed run restarts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from stages.images import ImageCache
from stages.warp import warp_batch


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
    """Warped-window batches: each batch takes ``count`` rows, with replacement, from each ``pool``.

    paths: the images; image_index (M,), boxes (M, 4), labels (M,): every window; pools: (row indices,
    count) pairs, e.g. R-CNN's 32 foreground and 96 background windows. Calling with an iteration gives
    ((B, 3, size, size) crops, (B,) int64 labels).
    """

    def __init__(
        self,
        paths: Sequence[Path],
        image_index: np.ndarray,
        boxes: np.ndarray,
        labels: np.ndarray,
        pools: Sequence[tuple[np.ndarray, int]],
        size: int,
        padding: int,
        *,
        jitter: float = 0.0,
        mirror: bool = True,
        seed: int = 0,
    ):
        self.paths = list(paths)
        self.image_index, self.boxes, self.labels = image_index, boxes, labels
        self.pools = [(np.asarray(rows), count) for rows, count in pools if count > 0]
        self.size, self.padding = size, padding
        self.jitter, self.mirror, self.seed = jitter, mirror, seed
        self.cache = ImageCache()

    def __call__(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, iteration])
        rows = np.concatenate([rows[rng.integers(0, len(rows), count)] for rows, count in self.pools])
        used = np.unique(self.image_index[rows])
        images = {index: self.cache(self.paths[index]) for index in used}
        boxes = jitter_boxes(self.boxes[rows], self.jitter, rng)
        flips = rng.random(len(rows)) < 0.5 if self.mirror else None
        crops = warp_batch(images, self.image_index[rows], boxes, self.size, self.padding, flips)
        return crops, torch.as_tensor(self.labels[rows], dtype=torch.int64)


class _Iterations(Dataset):
    def __init__(self, make: Callable[[int], object], start: int, stop: int):
        self.make, self.start, self.stop = make, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, index: int):
        return self.make(self.start + index)


def iteration_batches(
    make: Callable[[int], object], start: int, stop: int, workers: int, pin_memory: bool = False
) -> Iterator:
    """The batches ``make(start) .. make(stop - 1)``, made by ``workers`` DataLoader processes (0: here)."""
    loader = DataLoader(
        _Iterations(make, start, stop), batch_size=None, num_workers=workers, pin_memory=pin_memory
    )
    return iter(loader)
