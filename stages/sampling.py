"""The balanced sampler every method's mini-batches come from: a fixed share of foreground regions, the
rest background.

R-CNN fine-tuning: 32 foreground and 96 background windows of 128, with replacement (section 2.3 and the
release's window data layer); SPP-net: 25% of 128, with replacement (section 4.1); Fast R-CNN: 25% of the
64 RoIs an image, without replacement (section 2.3); pre-training: all 128 from the object crops.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BalancedSampler:
    """``batch_size`` rows, ``foreground_fraction`` of them foreground where there are enough.

    The foreground share is ``round(batch_size * foreground_fraction)`` or as many foreground rows as
    there are, if fewer; background fills the rest of the batch. With ``replace`` the rows are drawn
    with replacement (a pool may be smaller than its share; an empty pool gives nothing); without it, a
    pool gives at most what it has, so the batch may come out smaller.
    """

    batch_size: int
    foreground_fraction: float
    replace: bool

    def counts(self, foreground: int, background: int) -> tuple[int, int]:
        """How many rows to draw from pools of ``foreground`` and ``background`` rows."""
        chosen = min(round(self.batch_size * self.foreground_fraction), foreground)
        rest = self.batch_size - chosen
        if self.replace:
            return chosen, rest if background else 0
        return chosen, min(rest, background)

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
