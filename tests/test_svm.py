"""The SVMs' sampling rules and hard negative mining on a feature cache."""

import numpy as np
import pytest

from stages.cache.options import SvmOptions
from stages.cache.svm import load_svms, train_svms, training_roles
from stages.core.errors import UserError
from stages.runs.layout import RunLayout
from tests.helpers import separable_images, write_cache


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


def test_hard_negative_mining_separates_a_separable_problem(tmp_path):
    files = RunLayout(tmp_path / "run").method("rcnn")
    images = separable_images()
    write_cache(files.features("trainval"), images)
    summary = train_svms(files, "trainval", SvmOptions(retrain_every=500, block_rows=700))
    svms = load_svms(files)
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


def test_missing_or_partial_cache_names_the_command(tmp_path):
    with pytest.raises(UserError, match="not found; make it with `rcnn extract-features"):
        train_svms(RunLayout(tmp_path).method("rcnn"), "trainval")


def test_svms_of_other_classes_are_refused(tmp_path):
    files = RunLayout(tmp_path / "run").method("rcnn")
    write_cache(files.features("trainval"), separable_images(num_images=2, per_image=20))
    train_svms(files, "trainval")
    with pytest.raises(UserError, match="trained on classes a, b, not a, c; pass --classes or retrain"):
        load_svms(files, ("a", "c"))
