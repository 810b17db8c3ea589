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

Whether one detector beats another beyond that noise: the paired bootstrap (``paired_difference``) scores
both evaluations of a split on the same draws of its images, and gives the percentile interval of the
difference of their mAPs and a two-sided bootstrap p-value.
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
    images = _images(evaluation)
    if images is None:
        return None
    aps, maps = _drawn(evaluation, _draw_counts(images, samples, seed))
    return Intervals(
        _percentiles(maps) or (float("nan"), float("nan")),
        {c.name: _percentiles(aps[:, i]) for i, c in enumerate(evaluation.classes)},
        samples,
        seed,
    )


@dataclass(frozen=True)
class PairedDifference:
    """How far ``first.map - second.map`` (``difference``) stands from the test set's noise: the 95%
    percentile interval of the difference over draws of the same images for both, and a two-sided
    bootstrap p-value of no difference."""

    difference: float
    ci95: tuple[float, float]
    p_value: float
    samples: int
    seed: int

    @property
    def beyond_noise(self) -> bool:
        """Whether the interval leaves out 0: one detector beats the other beyond the test set's noise."""
        return bool(self.ci95[0] > 0 or self.ci95[1] < 0)


def paired_difference(
    first: Evaluation, second: Evaluation, samples: int = SAMPLES, seed: int = 0
) -> PairedDifference | None:
    """The paired bootstrap of ``first.map - second.map``: both evaluations, of the same split, scored on
    the same draws of its images, so the noise the two share (hard images drawn often) cancels out of
    the difference. Draws where either mAP is NaN are left out. None where ``bootstrap_intervals``
    would give None for either."""
    if samples < 1:
        raise UserError("paired bootstrap: at least one sample")
    if first.metric != second.metric:
        raise UserError(f"paired bootstrap: metrics differ ({first.metric} vs {second.metric})")
    names = [c.name for c in first.classes], [c.name for c in second.classes]
    if names[0] != names[1]:
        raise UserError(
            f"paired bootstrap: classes differ ({', '.join(names[0])} vs {', '.join(names[1])}); "
            "evaluate both on the same split"
        )
    images = _images(first), _images(second)
    if images[0] is None or images[1] is None:
        return None
    if images[0] != images[1]:
        raise UserError(
            f"paired bootstrap: the evaluations are of {images[0]} and {images[1]} images; "
            "evaluate both on the same split"
        )
    counts = _draw_counts(images[0], samples, seed)
    differences = _drawn(first, counts)[1] - _drawn(second, counts)[1]
    differences = differences[np.isfinite(differences)]
    if len(differences):
        low, high = np.percentile(differences, [2.5, 97.5])
        ci95 = float(low), float(high)
        p_value = min(1.0, 2 * min(float(np.mean(differences <= 0)), float(np.mean(differences >= 0))))
    else:
        ci95, p_value = (float("nan"), float("nan")), float("nan")
    return PairedDifference(first.map - second.map, ci95, p_value, samples, seed)


def _images(evaluation: Evaluation) -> int | None:
    """The split's image count, from the matches ``evaluation`` kept; None when it cannot be drawn from
    (a metric without a bootstrap, no matches, or a trained class without any)."""
    kept = [c.matches for c in evaluation.classes]
    matches = [m for m in kept if m is not None]
    untrained = set(evaluation.untrained)
    missing = any(
        m is None and c.name not in untrained for c, m in zip(evaluation.classes, kept, strict=True)
    )
    if evaluation.metric not in METRICS or not matches or missing:
        return None
    return len(matches[0].positives)


def _draw_counts(images: int, samples: int, seed: int) -> np.ndarray:
    """How many times each image is drawn (samples, images): ``images`` draws with replacement, seeded."""
    return np.random.default_rng(seed).multinomial(images, np.full(images, 1 / images), size=samples)


def _drawn(evaluation: Evaluation, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each class's AP (B, C) and the mAP over the trained classes (B,) in each draw, its images counted
    ``counts`` (B, N) times; NaN for a class without matches or positives in a draw."""
    samples = len(counts)
    aps = np.full((samples, len(evaluation.classes)), np.nan)
    for column, result in enumerate(evaluation.classes):
        found = result.matches
        if found is None:
            continue
        for rows in np.array_split(np.arange(samples), max(1, samples * found.hit.size // CHUNK)):
            drawn = rows[counts[rows] @ found.positives > 0]
            if len(drawn):
                aps[drawn, column] = _draw_aps(found, counts[drawn], evaluation.metric)
    untrained = set(evaluation.untrained)
    trained = [i for i, c in enumerate(evaluation.classes) if c.name not in untrained]
    return aps, _nanmean_rows(aps[:, trained])


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
