"""The balanced sampler every method's mini-batches come from: a fixed share of foreground regions, the
rest background.

R-CNN fine-tuning: 32 foreground and 96 background windows of 128, with replacement (section 2.3 and the
release's window data layer); SPP-net: 25% of 128, with replacement (section 4.1); Fast R-CNN: 25% of the
64 RoIs an image, without replacement (section 2.3); pre-training: all 128 from the object crops, with
replacement.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BalancedSampler:
    """``batch_size`` rows, ``round(batch_size * foreground_fraction)`` of them foreground.

    With ``replace`` each pool fills its share however small it is, and an empty pool leaves its share to
    the other (the window data layer of the R-CNN release). Without it a pool gives at most what it has:
    foreground as many as there are up to its share, background the rest up to what there is, so the
    batch may come out smaller (the Fast R-CNN release, and torchvision's
    ``BalancedPositiveNegativeSampler``).
    """

    batch_size: int
    foreground_fraction: float
    replace: bool

    def counts(self, foreground: int, background: int) -> tuple[int, int]:
        """How many rows to draw from pools of ``foreground`` and ``background`` rows."""
        share = round(self.batch_size * self.foreground_fraction)
        if self.replace:
            chosen = share if foreground else 0
            return chosen, (self.batch_size - chosen) if background else 0
        chosen = min(share, foreground)
        return chosen, min(self.batch_size - chosen, background)

    def __call__(
        self, foreground: np.ndarray, background: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """The chosen rows (int64): the foreground draws, then the background draws."""
        pools = zip((foreground, background), self.counts(len(foreground), len(background)), strict=True)
        if self.replace:
            drawn = [pool[rng.integers(0, len(pool), n)] for pool, n in pools if n]
        else:
            drawn = [rng.choice(pool, n, replace=False) for pool, n in pools]
        return np.concatenate([np.asarray(foreground[:0]), *drawn]).astype(np.int64)
