"""Box regression on cached region features: whitening, learning a displacement, feature scaling."""

import numpy as np
import pytest
import torch

from stages.cache.box_regression import load_bbox, train_bbox, whitening
from stages.cache.files import FeatureCache
from stages.cache.norms import feature_scale
from stages.cache.options import BboxOptions
from stages.core.geometry import decode_boxes
from stages.runs.layout import RunLayout
from stages.training.matching import LabelledRegions
from tests.helpers import write_cache


def test_whitening_inverts():
    targets = np.random.default_rng(0).normal(size=(500, 4)) @ np.diag([1.0, 1.5, 2.0, 3.0])
    mean, whiten, unwhiten = whitening(targets)
    white = (targets - mean) @ whiten
    np.testing.assert_allclose(np.cov(white.T, bias=True), np.eye(4), atol=0.05)
    np.testing.assert_allclose(whiten @ unwhiten, np.eye(4), atol=1e-9)


def displaced_images(count: int = 6) -> list:
    """Images of two objects and 100 shifted copies of each, whose pool5 is the shift (and a 1)."""
    rng = np.random.default_rng(0)
    images = []
    for _ in range(count):
        gt = np.array([[20, 20, 60, 50], [5, 60, 30, 95]], np.float32)
        shifts = rng.uniform(-4, 4, (200, 4)).astype(np.float32)
        boxes = np.concatenate([gt, np.repeat(gt, 100, axis=0) + shifts])
        labels = np.concatenate([[1, 2], np.zeros(200, np.int64)])
        targets = np.concatenate([gt, np.repeat(gt, 100, axis=0)])
        iou = np.zeros((202, 2), np.float32)
        iou[np.r_[0, 2:102], 0] = 0.8
        iou[np.r_[1, 102:202], 1] = 0.8
        pool5 = np.concatenate([np.concatenate([np.zeros((2, 4)), shifts]), np.ones((202, 1))], 1)
        regions = LabelledRegions(boxes, labels, iou, targets)
        images.append((regions, np.ones((202, 2), np.float32), pool5.astype(np.float32)))
    return images


def test_box_regression_learns_a_linear_displacement(tmp_path):
    """Targets that are a linear function of the features are recovered: the regressed boxes land on
    the objects (to within the ridge's shrinkage)."""
    images = displaced_images()
    files = RunLayout(tmp_path / "run").method("rcnn")
    write_cache(files.features("trainval"), images)
    train_bbox(files, "pool5", "trainval", BboxOptions(alpha=1.0))
    regressors = load_bbox(files, ("a", "b"))
    regions, _, pool5 = images[0]
    rows = np.arange(2, 202)
    deltas = regressors.deltas(pool5[rows], np.where(rows < 102, 1, 2))
    moved = decode_boxes(torch.as_tensor(regions.boxes[rows]), torch.as_tensor(deltas)).numpy()
    before = np.abs(regions.boxes[rows] - regions.target_boxes[rows]).mean()
    after = np.abs(moved - regions.target_boxes[rows]).mean()
    assert after < 0.2 * before


def test_box_regression_scales_features_by_the_sampled_norms(tmp_path):
    """The norms taken in train-bbox's own pass over the cache give feature_scale's scale."""
    files = RunLayout(tmp_path / "run").method("rcnn")
    write_cache(files.features("trainval"), displaced_images())
    options = BboxOptions(norm_sample_images=4, norm_sample_boxes=50, block_rows=450, seed=3)
    train_bbox(files, "pool5", "trainval", options)
    with FeatureCache.of(files, "trainval") as cache:
        expected = feature_scale(cache, "pool5", 20.0, 4, 50, seed=3)
        assert expected != pytest.approx(feature_scale(cache, "pool5", 20.0, 4, 50, seed=4))
    assert load_bbox(files, ("a", "b")).feature_scale == pytest.approx(expected, rel=1e-6)
