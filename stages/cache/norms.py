"""Feature scaling as R-CNN's release does it: features scaled to a mean L2 norm of 20, the mean taken
over a seeded sample of a cache's regions (``norm_sample``), for the SVMs and the box regressors."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stages.cache.files import (
    FeatureCache,
)
from stages.core.errors import UserError


def norm_sample(cache: FeatureCache, images: int, boxes: int, seed: int) -> dict[int, np.ndarray]:
    """The rows whose mean norm sets the feature scale: {image index: sorted row numbers within the image},
    up to ``boxes`` rows of each of up to ``images`` images chosen at random (rcnn_feature_stats.m)."""
    rng = np.random.default_rng(seed)
    sample = {}
    for index in np.sort(rng.permutation(len(cache.image_ids))[:images]):
        count = int(cache.offsets[index + 1] - cache.offsets[index])
        sample[int(index)] = np.sort(rng.permutation(count)[:boxes])
    return sample


def scale_from_norms(
    cache: FeatureCache, feature: str, norms: Sequence[np.ndarray], target_norm: float
) -> float:
    """``target_norm`` / the mean of the sampled rows' L2 norms."""
    mean_norm = float(np.concatenate(norms).mean()) if norms else 0.0
    if not mean_norm > 0:
        raise UserError(f"{cache.path}: the {feature} features are all zero; is the network trained?")
    return target_norm / mean_norm


def require_feature(cache: FeatureCache, feature: str) -> None:
    if feature not in cache.feature_points:
        raise UserError(f"{cache.path}: has no {feature} features (has {', '.join(cache.feature_points)})")


def feature_scale(
    cache: FeatureCache, feature: str, target_norm: float, images: int, boxes: int, seed: int
) -> float:
    """``target_norm`` / the mean L2 norm of ``feature`` over the rows of ``norm_sample``.

    The R-CNN release's feature scaling (rcnn_feature_stats.m), so one SVM C suits any network. A stage
    that reads the whole cache anyway takes the norms of the same rows in its own pass instead.
    """
    require_feature(cache, feature)
    norms = [
        np.linalg.norm(cache.h5[feature][rows + int(cache.offsets[index])].astype(np.float32), axis=1)
        for index, rows in norm_sample(cache, images, boxes, seed).items()
        if len(rows)
    ]
    return scale_from_norms(cache, feature, norms, target_norm)
