"""Region labels, the feature cache, the SVMs' sampling rules and hard negative mining, box regression."""

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from stages.bbox import BboxOptions, load_bbox, train_bbox, whitening
from stages.errors import UserError
from stages.features import CacheWriter, FeatureCache, feature_scale, features_path
from stages.geometry import decode_boxes
from stages.regions import LabelledRegions, label_regions
from stages.svm import SvmOptions, load_svms, train_svms, training_roles
from stages.voc import ImageRecord


def record(boxes, labels, difficult=None) -> ImageRecord:
    boxes = np.array(boxes, np.float32).reshape(-1, 4)
    return ImageRecord(
        "img", Path("img.jpg"), 100, 100, boxes, np.array(labels, np.int64),
        np.array(difficult if difficult is not None else [False] * len(boxes)),
    )  # fmt: skip


def test_labels_overlaps_and_difficult_objects():
    r = record([[0, 0, 10, 10], [50, 50, 70, 70], [0, 0, 10, 9]], [1, 2, 2], difficult=[False, False, True])
    proposals = np.array([[0, 0, 10, 5], [50, 50, 70, 60], [80, 80, 90, 90]], np.float32)
    regions = label_regions(r, proposals, num_classes=3)
    assert regions.gt_labels.tolist() == [1, 2, 0, 0, 0]  # the difficult object is not a training box
    np.testing.assert_allclose(regions.class_iou[2], [0.5, 0.0, 0.0])
    np.testing.assert_allclose(regions.class_iou[3], [0.0, 0.5, 0.0])
    assert regions.labels_at(0.5).tolist() == [1, 2, 1, 2, 0]
    assert regions.labels_at(0.6).tolist() == [1, 2, 0, 0, 0]
    np.testing.assert_array_equal(regions.target_boxes[3], [50, 50, 70, 70])


def test_svm_roles_positives_are_ground_truth_only_negatives_below_0_3():
    gt_labels = np.array([1, 2, 0, 0, 0, 0])
    class_iou = np.array(
        [[1.0, 0.0], [0.1, 1.0], [0.9, 0.0], [0.29, 0.0], [0.3, 0.0], [0.0, 0.45]], np.float32
    )
    positive, negative = training_roles(gt_labels, class_iou, 0.3)
    assert positive[:, 0].tolist() == [True, False, False, False, False, False]
    # class 1: the other class's object (IoU 0.1) and the 0.29 proposal are negatives; IoU 0.9 and 0.3 ignored
    assert negative[:, 0].tolist() == [False, True, False, True, False, True]
    assert positive[:, 1].tolist() == [False, True, False, False, False, False]
    assert negative[:, 1].tolist() == [True, False, True, True, True, False]


def write_cache(path: Path, images: list[tuple[LabelledRegions, np.ndarray, np.ndarray]], stamp=None) -> Path:
    dims = {"fc7": images[0][1].shape[1], "pool5": images[0][2].shape[1]}
    ids = [str(i) for i in range(len(images))]
    writer = CacheWriter(path, stamp or {"test": 1}, ["a", "b"], dims, "float32", ids)
    for i, (regions, fc7, pool5) in enumerate(images[writer.images_done :], start=writer.images_done):
        writer.append(str(i), regions, {"fc7": fc7, "pool5": pool5})
    return writer.finish({})


def separable_images(num_images=12, per_image=300, seed=0):
    """Class a's regions sit near +e0, b's near +e1, background near -e0 - e1: linearly separable."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(num_images):
        gt = np.array([1, 2])
        labels = np.concatenate([gt, np.zeros(per_image, np.int64)])
        class_iou = np.zeros((len(labels), 2), np.float32)
        class_iou[0, 0] = class_iou[1, 1] = 1.0
        class_iou[2:5, 0] = 0.6  # near-duplicates of the a object: ignored by a's SVM
        fc7 = rng.normal(0, 0.3, (len(labels), 8)).astype(np.float32)
        fc7[0, 0] += 3
        fc7[1, 1] += 3
        fc7[2:5, 0] += 3
        fc7[5:, :2] -= 1
        boxes = rng.uniform(0, 50, (len(labels), 4)).astype(np.float32)
        boxes[:, 2:] += boxes[:, :2] + 5
        regions = LabelledRegions(boxes, labels, class_iou, boxes.copy())
        images.append((regions, fc7, fc7[:, :4].copy()))
    return images


def test_hard_negative_mining_separates_a_separable_problem(tmp_path):
    run = tmp_path / "run"
    images = separable_images()
    write_cache(features_path(run, "rcnn", "trainval"), images)
    summary = train_svms(run, "rcnn", "trainval", SvmOptions(retrain_every=500, block_rows=700))
    svms = load_svms(run, "rcnn")
    fc7 = np.concatenate([f for _, f, _ in images])
    labels = np.concatenate([r.gt_labels for r, _, _ in images])
    scores = svms.scores(fc7)
    assert (scores[labels == 1, 0] > 0).all() and (scores[labels == 2, 1] > 0).all()
    background = labels == 0
    assert (scores[background][5:] < 0).mean() > 0.99
    a = summary.classes[0]
    total_negatives = sum(int((r.class_iou[:, 0] < 0.3).sum()) for r, _, _ in images)
    assert a.positives == len(images) and a.retrains >= 2  # the first image and the last
    assert 0 < a.cached_negatives < total_negatives  # easy negatives were evicted
    assert summary.peak_rss_mb > 0


def test_cache_reads_stay_within_the_block_size(tmp_path):
    path = write_cache(tmp_path / "c.h5", separable_images(num_images=7, per_image=98))  # 100 rows an image
    with FeatureCache(path, "make it") as cache:
        sizes = [len(block["fc7"]) for _, block in cache.blocks(["fc7"], max_rows=250)]
        assert sizes == [200, 200, 200, 100]
        # an image larger than the block comes alone
        assert [len(b["fc7"]) for _, b in cache.blocks(["fc7"], max_rows=50)] == [100] * 7
        ids = [image.image_id for image in cache.images(["fc7"], max_rows=250)]
        assert ids == [str(i) for i in range(7)]


def test_cache_schema(tmp_path):
    path = write_cache(tmp_path / "c.h5", separable_images(num_images=2, per_image=10))
    with h5py.File(path) as h5:
        assert h5.attrs["format"] == "rcnn-toolkit/features" and h5.attrs["complete"]
        assert h5["offsets"][:].tolist() == [0, 12, 24]
        assert h5["boxes"].shape == (24, 4) and h5["class_iou"].shape == (24, 2)
        assert h5["gt_labels"].dtype == np.int16 and h5["fc7"].chunks[0] > 1
        assert h5["fc7"].compression == "gzip"


def test_cache_resumes_after_an_interruption(tmp_path):
    images = separable_images(num_images=4, per_image=10)
    target = tmp_path / "c.h5"
    ids = [str(i) for i in range(4)]
    writer = CacheWriter(target, {"s": 1}, ["a", "b"], {"fc7": 8, "pool5": 4}, "float32", ids)
    for i in range(2):
        writer.append(ids[i], images[i][0], {"fc7": images[i][1], "pool5": images[i][2]})
    # the third image was half written when the process died
    writer.h5["fc7"].resize(writer.h5["fc7"].shape[0] + 5, axis=0)
    writer.close()
    assert not target.exists()
    resumed = CacheWriter(target, {"s": 1}, ["a", "b"], {"fc7": 8, "pool5": 4}, "float32", ids)
    assert resumed.images_done == 2 and resumed.h5["fc7"].shape[0] == 24
    resumed.close()
    write_cache(target, images, stamp={"s": 1})
    with FeatureCache(target, "x") as cache:
        np.testing.assert_array_equal(cache.h5["fc7"][:], np.concatenate([f for _, f, _ in images]))
    # a partial file made with other settings is not continued
    other = CacheWriter(tmp_path / "d.h5", {"s": 1}, ["a", "b"], {"fc7": 8, "pool5": 4}, "float32", ids)
    other.append(ids[0], images[0][0], {"fc7": images[0][1], "pool5": images[0][2]})
    other.close()
    fresh = CacheWriter(tmp_path / "d.h5", {"s": 2}, ["a", "b"], {"fc7": 8, "pool5": 4}, "float32", ids)
    assert fresh.images_done == 0
    fresh.close()


def test_missing_or_partial_cache_names_the_command(tmp_path):
    with pytest.raises(UserError, match="not found; make it with `rcnn extract-features"):
        train_svms(tmp_path, "rcnn", "trainval")


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
    run = tmp_path / "run"
    write_cache(features_path(run, "rcnn", "trainval"), images)
    train_bbox(run, "rcnn", "trainval", BboxOptions(alpha=1.0))
    regressors = load_bbox(run, "rcnn", ("a", "b"))
    regions, _, pool5 = images[0]
    rows = np.arange(2, 202)
    deltas = regressors.deltas(pool5[rows], np.where(rows < 102, 1, 2))
    moved = decode_boxes(torch.as_tensor(regions.boxes[rows]), torch.as_tensor(deltas)).numpy()
    before = np.abs(regions.boxes[rows] - regions.target_boxes[rows]).mean()
    after = np.abs(moved - regions.target_boxes[rows]).mean()
    assert after < 0.2 * before


def test_box_regression_scales_features_by_the_sampled_norms(tmp_path):
    """The norms taken in train-bbox's own pass over the cache give feature_scale's scale."""
    run = tmp_path / "run"
    write_cache(features_path(run, "rcnn", "trainval"), displaced_images())
    options = BboxOptions(norm_sample_images=4, norm_sample_boxes=50, block_rows=450, seed=3)
    train_bbox(run, "rcnn", "trainval", options)
    with FeatureCache(features_path(run, "rcnn", "trainval"), "make it") as cache:
        expected = feature_scale(cache, "pool5", 20.0, 4, 50, seed=3)
        assert expected != pytest.approx(feature_scale(cache, "pool5", 20.0, 4, 50, seed=4))
    assert load_bbox(run, "rcnn", ("a", "b")).feature_scale == pytest.approx(expected, rel=1e-6)
