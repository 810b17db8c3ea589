"""How sure an mAP is: a 95% interval by bootstrap over the test images (Efron and Tibshirani, "An
Introduction to the Bootstrap", 1993, chapter 13: the percentile interval).

The split's images are drawn with replacement, as many as it has, ``samples`` times (seeded); each draw is
scored as the split is, an image drawn k times counting its detections and objects k times, and the
interval is the 2.5th and 97.5th percentiles of the draws' APs and mAPs. Matching happens within an
image, so each detection's hit or miss is found once, by the evaluation (``ClassResult.matches``), and a
draw only reweights the images: VOC's PR curve (``ClassMatches.curve``), or COCO's AP at IoU 0.50:0.95
accumulated again from COCOeval's matches at its ten IoU thresholds (``CocoMatches.average_precision``).
The interval measures the test set's sampling noise, not the training's: a detector trained again with
another seed moves as well.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stages.core.errors import UserError
from stages.evaluation.coco import CocoMatches
from stages.evaluation.metrics import ClassMatches, Evaluation, average_precision

METRICS = ("voc07", "voc10", "coco")
"""The metrics a bootstrap interval is drawn for: under ``coco``, of the headline AP at IoU 0.50:0.95 (all
areas, 100 detections) and of each class's; COCO's other eleven figures are not drawn."""

SAMPLES = 1000
"""Draws of the test images: enough for the 2.5th and 97.5th percentiles to settle within about 0.005."""

CHUNK = 250_000
"""Draws x detections (x IoU thresholds, under ``coco``) scored at once: arrays of 2 MB, which stay in the
cache."""


@dataclass(frozen=True)
class Intervals:
    """95% intervals: of the mAP ``(low, high)``, and of each class's AP by name (None: no positives)."""

    map: tuple[float, float]
    ap: dict[str, tuple[float, float] | None]
    samples: int
    seed: int

    def to_json(self) -> dict:
        """``{"map_ci95": [low, high], "ap_ci95": {class: [low, high] or null}, "bootstrap": {...}}``."""

        def pair(found: tuple[float, float] | None) -> list[float] | None:
            return None if found is None else [round(found[0], 6), round(found[1], 6)]

        return {
            "map_ci95": pair(self.map),
            "ap_ci95": {name: pair(found) for name, found in self.ap.items()},
            "bootstrap": {"samples": self.samples, "seed": self.seed, "over": "test images"},
        }


def bootstrap_intervals(evaluation: Evaluation, samples: int = SAMPLES, seed: int = 0) -> Intervals | None:
    """95% percentile intervals of every class's AP and of the mAP (over the trained classes with
    positives in a draw, as ``Evaluation.map``) of ``evaluation``, from the matches it kept; under
    ``coco``, an untrained class (not scored) has none. None when a trained class kept no matches (COCO's
    metric without any detection)."""
    if samples < 1:
        raise UserError("bootstrap intervals: at least one sample")
    names = [c.name for c in evaluation.classes]
    trained = [i for i, name in enumerate(names) if name not in set(evaluation.untrained)]
    kept = [c.matches for c in evaluation.classes]
    matches = [m for m in kept if m is not None]
    if evaluation.metric not in METRICS or not matches or any(kept[i] is None for i in trained):
        return None
    images = len(matches[0].positives)
    counts = np.random.default_rng(seed).multinomial(images, np.full(images, 1 / images), size=samples)
    aps = np.full((samples, len(kept)), np.nan)
    for column, found in enumerate(kept):
        if found is None:
            continue
        for rows in np.array_split(np.arange(samples), max(1, samples * found.hit.size // CHUNK)):
            drawn = rows[counts[rows] @ found.positives > 0]
            if len(drawn):
                aps[drawn, column] = _draw_aps(found, counts[drawn], evaluation.metric)
    return Intervals(
        _percentiles(_nanmean_rows(aps[:, trained])) or (float("nan"), float("nan")),
        {name: _percentiles(aps[:, i]) for i, name in enumerate(names)},
        samples,
        seed,
    )


def _draw_aps(found: ClassMatches | CocoMatches, weights: np.ndarray, metric: str) -> np.ndarray:
    """One class's AP in each draw (B,), its images counted ``weights`` (B, N) times."""
    if isinstance(found, CocoMatches):
        return found.average_precision(weights)
    return average_precision(*found.curve(weights), metric)


def _nanmean_rows(values: np.ndarray) -> np.ndarray:
    """Each row's mean over its finite entries (NaN for a row without any)."""
    finite = np.isfinite(values)
    total = np.where(finite, values, 0.0).sum(axis=1)
    kept = finite.sum(axis=1)
    return np.divide(total, kept, out=np.full(len(values), np.nan), where=kept > 0)


def _percentiles(values: np.ndarray) -> tuple[float, float] | None:
    """The 2.5th and 97.5th percentiles of the finite ``values``; None without any."""
    finite = values[np.isfinite(values)]
    if not len(finite):
        return None
    low, high = np.percentile(finite, [2.5, 97.5])
    return float(low), float(high)
