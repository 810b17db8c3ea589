"""Class-specific bounding-box regression on cached region features (R-CNN appendix C and its release):
R-CNN's pool5, SPP-net's pyramid, each method's last pooled conv features before fc6.

For class c, the training pairs are the regions (proposals and ground truths) whose best-overlapping object is
of class c with IoU > 0.6 (``stages.training.matching.Matcher``); the targets are
``stages.core.geometry.encode_boxes`` of the region towards that object. As in the release, features are
scaled to a mean L2 norm of 20, the targets are centred and whitened (multiplied by (Sigma + 0.001)^-1/2), and
each target is fitted by ridge regression, lambda 1000.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from stages.cache.files import FeatureCache
from stages.cache.norms import norm_sample, require_feature, scale_from_norms
from stages.cache.options import BboxOptions
from stages.core.atomic import atomic_path
from stages.core.errors import UserError
from stages.core.geometry import encode_boxes
from stages.core.progress import SILENT, Progress
from stages.runs.layout import MethodLayout, write_manifest
from stages.training.matching import Matcher

WHITENING_EPSILON = 0.001


@dataclass(frozen=True)
class BoxRegressors:
    """Per-class linear regressors of whitened targets.

    coef (C, 4, P), intercept (C, 4), unwhiten (C, 4, 4), mean (C, 4); ``trained`` (C,) marks the classes
    that had training pairs (the others predict no change).
    """

    coef: np.ndarray
    intercept: np.ndarray
    unwhiten: np.ndarray
    mean: np.ndarray
    trained: np.ndarray
    feature_scale: float
    feature: str

    def deltas(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """(K, P) features of regions scored for (K,) classes 1..C -> (K, 4) (tx, ty, tw, th)."""
        c = np.asarray(labels) - 1
        scaled = np.asarray(features, np.float32) * self.feature_scale
        whitened = np.einsum("kp,kjp->kj", scaled, self.coef[c]) + self.intercept[c]
        deltas = np.einsum("kj,kji->ki", whitened, self.unwhiten[c]) + self.mean[c]
        return np.where(self.trained[c][:, None], deltas, 0.0).astype(np.float32)


def whitening(targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(K, 4) targets -> mean (4,), whiten (4, 4) = (Sigma + eps)^-1/2 and unwhiten = (Sigma + eps)^1/2."""
    mean = targets.mean(axis=0)
    centred = targets - mean
    values, vectors = np.linalg.eigh(centred.T @ centred / len(targets))
    values = np.maximum(values, 0) + WHITENING_EPSILON
    whiten = vectors @ np.diag(values**-0.5) @ vectors.T
    unwhiten = vectors @ np.diag(values**0.5) @ vectors.T
    return mean, whiten, unwhiten


@dataclass(frozen=True)
class BboxSummary:
    path: Path
    pairs: dict[str, int]
    mean_abs_error: dict[str, float]
    seconds: float


def train_bbox(
    method: MethodLayout,
    feature: str,
    split: str,
    options: BboxOptions = BboxOptions(),
    progress: Progress = SILENT,
) -> BboxSummary:
    """Fit the regressors on ``feature`` of the method's cache of ``split``; write its ``bbox.npz``."""
    from sklearn.linear_model import Ridge

    started = time.perf_counter()
    source = method.features(split)
    matcher = Matcher(options.min_iou, strictly_above=True)
    with FeatureCache.of(method, split) as cache:
        require_feature(cache, feature)
        classes, dim = cache.classes, cache.dim(feature)
        sample = norm_sample(cache, options.norm_sample_images, options.norm_sample_boxes, options.seed)
        features, targets, labels, norms = [], [], [], []
        columns = [feature, "boxes", "target_boxes", "class_iou"]
        with progress.task("reading training pairs", len(cache.image_ids), "img") as advance:
            for indices, block in cache.blocks(columns, options.block_rows):
                norms.extend(_sampled_norms(cache, indices, block[feature], sample))
                matched = matcher(block["class_iou"])
                rows = matched > 0
                features.append(block[feature][rows].astype(np.float32))
                labels.append(matched[rows])
                targets.append(
                    encode_boxes(
                        torch.as_tensor(block["boxes"][rows]), torch.as_tensor(block["target_boxes"][rows])
                    ).numpy()
                )
                advance(len(indices))
        scale = scale_from_norms(cache, feature, norms, options.target_norm)
    features_all, targets_all, labels_all = (
        np.concatenate(features),
        np.concatenate(targets),
        np.concatenate(labels),
    )
    del features
    features_all *= np.float32(scale)
    num = len(classes)
    regressors = BoxRegressors(
        np.zeros((num, 4, dim), np.float32),
        np.zeros((num, 4), np.float32),
        np.tile(np.eye(4, dtype=np.float32), (num, 1, 1)),
        np.zeros((num, 4), np.float32),
        np.zeros(num, bool),
        scale,
        feature,
    )
    pairs, errors = {}, {}
    with progress.task("ridge regression", num, "class") as advance:
        for c, name in enumerate(classes):
            mine = labels_all == c + 1
            pairs[name] = int(mine.sum())
            if mine.sum() >= 2:
                mean, whiten, unwhiten = whitening(targets_all[mine])
                ridge = Ridge(alpha=options.alpha).fit(
                    features_all[mine], (targets_all[mine] - mean) @ whiten
                )
                regressors.coef[c], regressors.intercept[c] = ridge.coef_, ridge.intercept_
                regressors.unwhiten[c], regressors.mean[c], regressors.trained[c] = unwhiten, mean, True
                predicted = regressors.deltas(features_all[mine] / scale, np.full(int(mine.sum()), c + 1))
                errors[name] = float(np.abs(predicted - targets_all[mine]).mean())
            advance()
    target = method.bbox
    with atomic_path(target) as tmp, open(tmp, "wb") as file:
        np.savez(
            file,
            **{k: v for k, v in asdict(regressors).items() if k not in ("feature_scale", "feature")},
            feature_scale=np.float32(scale),
            feature=np.array(feature),
            classes=np.array(classes),
        )
    summary = BboxSummary(target, pairs, errors, time.perf_counter() - started)
    write_manifest(
        target,
        stage="train-bbox",
        options={"method": method.name, "split": split, **asdict(options), "feature": feature},
        inputs=[source],
        seconds=summary.seconds,
        results={"pairs": pairs, "training_mean_abs_error": errors, "feature_scale": scale},
    )
    return summary


def _sampled_norms(
    cache: FeatureCache, indices: np.ndarray, features: np.ndarray, sample: dict[int, np.ndarray]
) -> list[np.ndarray]:
    """The L2 norms of the ``norm_sample`` rows of a block of whole images (``indices``, their rows)."""
    base = int(cache.offsets[indices[0]])
    return [
        np.linalg.norm(features[sample[index] + int(cache.offsets[index]) - base].astype(np.float32), axis=1)
        for index in map(int, indices)
        if len(sample.get(index, ()))
    ]


def load_bbox(method: MethodLayout, classes: tuple[str, ...]) -> BoxRegressors | None:
    """The regressors of ``method``, or None when ``rcnn train-bbox`` has not been run."""
    path = method.bbox
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as content:
            if tuple(str(c) for c in content["classes"]) != tuple(classes):
                raise UserError(f"{path}: trained for other classes; rerun train-bbox")
            return BoxRegressors(
                content["coef"],
                content["intercept"],
                content["unwhiten"],
                content["mean"],
                content["trained"],
                float(content["feature_scale"]),
                str(content["feature"]),
            )
    except (OSError, KeyError, ValueError) as exc:
        raise UserError(f"{path}: unreadable box-regression file ({exc}); rerun train-bbox") from None
