"""Per-class linear SVMs on cached features, with hard negative mining (R-CNN section 2.3 and its release).

For class c: positives are the ground-truth boxes of c; negatives are regions (proposals or other objects)
with IoU < 0.3 to every object of c; the rest are ignored. Features are scaled so their mean L2 norm is 20.
One pass over the images: the first image's negatives all enter the cache; after that only hard ones
(score > -1). A class is retrained (liblinear through scikit-learn: L1-loss dual SVM, C = 0.001, bias
multiplier 10, positive weight 2) when more than 2000 new negatives have arrived, and at the end; after each
retraining, easy negatives (score < -1.2) leave the cache.

Memory: the cache is read a block of whole images at a time (``block_rows``); what stays in memory is the
positives and the hard-negative caches, whose size the eviction bounds, not the size of the feature file.
"""

from __future__ import annotations

import logging
import resource
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from stages.cache.files import FeatureCache
from stages.cache.norms import feature_scale
from stages.cache.options import SvmOptions
from stages.core.atomic import atomic_path
from stages.core.errors import UserError
from stages.core.progress import SILENT, Progress
from stages.runs.layout import MethodLayout, RunLayout, write_manifest

log = logging.getLogger("rcnn")


def training_roles(
    gt_labels: np.ndarray, class_iou: np.ndarray, negative_iou: float
) -> tuple[np.ndarray, np.ndarray]:
    """R-CNN's SVM sampling rules for (N,) rows and C classes: (positives (N, C), negatives (N, C)) bool.

    A row is a positive of class c only if it is a ground-truth box of c; a negative of c if its IoU with
    every object of c is below ``negative_iou`` (ground truths of other classes included); else ignored.
    """
    classes = np.arange(1, class_iou.shape[1] + 1)
    return gt_labels[:, None] == classes, class_iou < negative_iou


@dataclass
class _ClassCache:
    positives: np.ndarray
    negatives: np.ndarray
    added: int = 0
    retrains: int = 0
    objective: tuple[float, float, float] = (0.0, 0.0, 0.0)  # positive loss, negative loss, regulariser


def fit_linear_svm(
    positives: np.ndarray, negatives: np.ndarray, options: SvmOptions
) -> tuple[np.ndarray, float, tuple[float, float, float]]:
    """(P, D), (Q, D) -> weights (D,), bias and the objective's (positive loss, negative loss, regulariser).

    liblinear's dual L1-loss SVM with a bias feature of value ``bias_multiplier``, as the release uses it.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    features = np.concatenate([positives, negatives])
    labels = np.concatenate([np.ones(len(positives)), np.zeros(len(negatives))])
    svm = LinearSVC(
        C=options.C,
        loss="hinge",
        dual=True,
        intercept_scaling=options.bias_multiplier,
        class_weight={1: options.positive_weight, 0: 1.0},
        max_iter=10000,
        random_state=options.seed,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        svm.fit(features, labels)
    weights, bias = svm.coef_[0].astype(np.float32), float(svm.intercept_[0])
    positive_loss = (
        options.C * options.positive_weight * np.maximum(0, 1 - (positives @ weights + bias)).sum()
    )
    negative_loss = options.C * np.maximum(0, 1 + (negatives @ weights + bias)).sum()
    regulariser = 0.5 * float(weights @ weights) + 0.5 * (bias / options.bias_multiplier) ** 2
    return weights, bias, (float(positive_loss), float(negative_loss), regulariser)


@dataclass(frozen=True)
class ClassSvm:
    name: str
    positives: int
    cached_negatives: int
    retrains: int
    objective: float


@dataclass(frozen=True)
class SvmSummary:
    path: Path
    classes: tuple[ClassSvm, ...]
    feature_scale: float
    peak_rss_mb: float
    seconds: float


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def train_svms(
    method: MethodLayout, split: str, options: SvmOptions = SvmOptions(), progress: Progress = SILENT
) -> SvmSummary:
    """Train one SVM a class on the method's feature cache of ``split``; write its ``svm.npz``."""
    started = time.perf_counter()
    source = method.features(split)
    with FeatureCache.of(method, split) as cache:
        scale = feature_scale(
            cache,
            options.feature,
            options.target_norm,
            options.norm_sample_images,
            options.norm_sample_boxes,
            options.seed,
        )
        num_classes, dim = len(cache.classes), cache.dim(options.feature)
        caches = _positives(cache, options, scale, num_classes, dim)
        weights = np.zeros((num_classes, dim), np.float32)
        biases = np.zeros(num_classes, np.float32)
        last = len(cache.image_ids) - 1
        with progress.task("hard negative mining", len(cache.image_ids), "img") as advance:
            for image in cache.images([options.feature, "gt_labels", "class_iou"], options.block_rows):
                features = image.columns[options.feature].astype(np.float32) * scale
                scores = features @ weights.T + biases
                _, negative = training_roles(
                    image.columns["gt_labels"], image.columns["class_iou"], options.negative_iou
                )
                if image.index > 0:
                    negative &= scores > options.hard_threshold
                for c, class_cache in enumerate(caches):
                    hard = features[negative[:, c]]
                    if len(hard):
                        class_cache.negatives = np.concatenate([class_cache.negatives, hard])
                        class_cache.added += len(hard)
                    due = image.index == 0 or class_cache.added > options.retrain_every or image.index == last
                    if due and len(class_cache.negatives) and len(class_cache.positives):
                        weights[c], biases[c] = _retrain(class_cache, options)
                advance(1, negatives=sum(len(c.negatives) for c in caches))
    target = method.svm
    with atomic_path(target) as tmp, open(tmp, "wb") as file:
        np.savez(
            file,
            weights=weights,
            biases=biases,
            feature_scale=np.float32(scale),
            classes=np.array(cache.classes),
            feature=np.array(options.feature),
        )
    summary = SvmSummary(
        target,
        tuple(
            ClassSvm(name, len(c.positives), len(c.negatives), c.retrains, sum(c.objective))
            for name, c in zip(cache.classes, caches, strict=True)
        ),
        scale,
        _peak_rss_mb(),
        time.perf_counter() - started,
    )
    write_manifest(
        target,
        stage="train-svm",
        options={"method": method.name, "split": split, **asdict(options)},
        inputs=[source],
        seconds=summary.seconds,
        results={
            "feature_scale": scale,
            "peak_rss_mb": round(summary.peak_rss_mb, 1),
            "feature_file_bytes": source.stat().st_size,
            "classes": {c.name: asdict(c) for c in summary.classes},
        },
    )
    return summary


def _positives(
    cache: FeatureCache, options: SvmOptions, scale: float, num_classes: int, dim: int
) -> list[_ClassCache]:
    """Every class's ground-truth features (scaled), read block by block."""
    found: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
    for _, block in cache.blocks([options.feature, "gt_labels", "class_iou"], options.block_rows):
        positive, _ = training_roles(block["gt_labels"], block["class_iou"], options.negative_iou)
        for c in np.flatnonzero(positive.any(axis=0)):
            found[c].append(block[options.feature][positive[:, c]].astype(np.float32) * scale)
    empty = np.zeros((0, dim), np.float32)
    return [_ClassCache(np.concatenate(f) if f else empty, empty) for f in found]


def _retrain(class_cache: _ClassCache, options: SvmOptions) -> tuple[np.ndarray, float]:
    weights, bias, class_cache.objective = fit_linear_svm(
        class_cache.positives, class_cache.negatives, options
    )
    class_cache.added = 0
    class_cache.retrains += 1
    keep = class_cache.negatives @ weights + bias >= options.easy_threshold
    class_cache.negatives = class_cache.negatives[keep]
    return weights, bias


@dataclass(frozen=True)
class SvmModel:
    """Trained SVMs: ``scores(features (N, D)) -> (N, C)``."""

    weights: np.ndarray
    biases: np.ndarray
    feature_scale: float
    classes: tuple[str, ...]
    feature: str

    def scores(self, features: np.ndarray) -> np.ndarray:
        return (np.asarray(features, np.float32) * self.feature_scale) @ self.weights.T + self.biases


def load_svms(method: MethodLayout, classes: tuple[str, ...] | None = None) -> SvmModel:
    """The SVMs ``rcnn train-svm`` wrote for ``method``, checked against ``classes`` when given."""
    path = method.svm
    if not path.exists():
        raise UserError(f"{path}: not found; make it with `{RunLayout(method.run).command_for(path)}`")
    try:
        with np.load(path, allow_pickle=False) as content:
            svms = SvmModel(
                content["weights"],
                content["biases"],
                float(content["feature_scale"]),
                tuple(str(c) for c in content["classes"]),
                str(content["feature"]),
            )
    except (OSError, KeyError, ValueError) as exc:
        raise UserError(f"{path}: unreadable SVM file ({exc}); rerun train-svm") from None
    if classes is not None and svms.classes != tuple(classes):
        raise UserError(
            f"{path}: trained on classes {', '.join(svms.classes)}, not {', '.join(classes)}; "
            "pass --classes or retrain"
        )
    return svms
