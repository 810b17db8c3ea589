"""Fast R-CNN's hierarchical sampling, target normalisation, test-time detection, data-parallel training."""

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from stages.detect import DetectOptions, detect_from_class_boxes
from stages.errors import UserError
from stages.fast import FastFinetuneOptions
from stages.fast_sampling import ImageBatches, SamplingOptions, scale_factor, target_statistics
from stages.geometry import encode_boxes
from stages.regions import LabelledRegions
from tests.conftest import write_image


def regions_of(gt: np.ndarray, gt_labels: np.ndarray, proposals: np.ndarray, classes: int) -> LabelledRegions:
    from stages.geometry import box_iou

    boxes = np.concatenate([gt, proposals]).astype(np.float32)
    iou = box_iou(boxes, gt)
    class_iou = np.zeros((len(boxes), classes), np.float32)
    for label in np.unique(gt_labels):
        class_iou[:, label - 1] = iou[:, gt_labels == label].max(axis=1)
    labels = np.concatenate([gt_labels, np.zeros(len(proposals), np.int64)])
    return LabelledRegions(boxes, labels, class_iou, gt[iou.argmax(axis=1)].astype(np.float32))


@pytest.fixture
def two_images(tmp_path):
    rng = np.random.default_rng(0)
    paths, regions = [], []
    for k, (height, width) in enumerate(((60, 80), (90, 50))):
        path = tmp_path / f"{k}.jpg"
        write_image(path, height, width, seed=k)
        gt = np.array([[10, 10, 40, 40], [20, 5, 45, 50]], np.float32)
        jitter = rng.uniform(-12, 12, (300, 4)).astype(np.float32)
        proposals = np.clip(np.repeat(gt, 150, axis=0) + jitter, 0, min(height, width))
        proposals[:, 2:] = np.maximum(proposals[:, 2:], proposals[:, :2] + 2)
        paths.append(path)
        regions.append(regions_of(gt, np.array([1, 2]), proposals, classes=2))
    return paths, regions


def test_batches_take_a_quarter_foreground_from_each_image_and_pad(two_images):
    paths, regions = two_images
    options = SamplingOptions(scales=(120,), max_size=200)
    means, stds = target_statistics(regions, 2, options)
    batches = ImageBatches(paths, regions, means, stds, options, seed=3)
    images, rois, labels, targets = batches(0)
    sizes = {(120, 160), (200, round(50 * 200 / 90))}  # shorter side 120 unless the longer passes 200
    assert images.shape == (2, 3, max(h for h, _ in sizes), max(w for _, w in sizes))
    for slot in (0, 1):
        mine = rois[:, 0] == slot
        assert mine.sum() == 64 and (labels[mine] > 0).sum() == 16
    assert torch.all(targets[labels == 0] == 0)
    again = batches(0)
    assert all(torch.equal(a, b) for a, b in zip((images, rois, labels, targets), again, strict=True))
    assert not torch.equal(batches(1)[1], rois)


def test_scale_factor_caps_the_longer_side():
    assert scale_factor(375, 500, 600, 1000) == pytest.approx(1.6)
    assert scale_factor(300, 1000, 600, 1000) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("sampling", "test_scale", "option"),
    [
        (SamplingOptions(scales=(1200,), max_size=1000), None, "--scales"),
        (SamplingOptions(scales=(600,), max_size=1000), 1200, "--test-scale"),
        (SamplingOptions(scales=(300, 400), max_size=500), None, "--test-scale"),  # the default 600
        (SamplingOptions(images_per_batch=4, rois_per_batch=2), None, "--images-per-batch"),
    ],
)
def test_inconsistent_training_options_are_user_errors(sampling, test_scale, option):
    with pytest.raises(UserError, match=option):
        FastFinetuneOptions(sampling=sampling, test_scale=test_scale)
    assert (
        FastFinetuneOptions(sampling=SamplingOptions(max_size=1666), test_scale=1000).resolved_test_scale
        == 1000
    )


def test_flipped_batch_mirrors_boxes_and_image(two_images):
    paths, regions = two_images
    options = SamplingOptions(images_per_batch=1, rois_per_batch=8, scales=(60,), max_size=400)
    means, stds = target_statistics(regions, 2, options)
    plain = ImageBatches(paths, regions, means, stds, replace(options, mirror=False))
    mirrored = ImageBatches(paths, regions, means, stds, options)
    iteration = next(k for k in range(50) if not torch.equal(plain(k)[0], mirrored(k)[0]))
    image_a, rois_a, labels_a, targets_a = plain(iteration)
    image_b, rois_b, labels_b, targets_b = mirrored(iteration)
    assert torch.allclose(image_b, image_a.flip(3))
    assert torch.equal(labels_a, labels_b)
    height, width = (60, 80) if plain.image_indices(iteration) == [0] else (90, 50)
    factor = scale_factor(height, width, 60, 400)  # inclusive corners mirror as x -> (W - 1) - x, scaled
    assert torch.allclose(rois_b[:, 1], (width - 1) * factor - rois_a[:, 3], atol=1e-4)
    assert torch.allclose(targets_b[:, 0], -targets_a[:, 0], atol=1e-5)
    assert torch.allclose(targets_b[:, 1:], targets_a[:, 1:], atol=1e-5)


def test_ranks_take_disjoint_images_of_an_epoch(two_images):
    paths, regions = two_images
    paths, regions = paths * 3, regions * 3  # six images, two an iteration and rank
    options = SamplingOptions()
    means, stds = target_statistics(regions, 2, options)
    ranks = [ImageBatches(paths, regions, means, stds, options, rank=r, world_size=2) for r in (0, 1)]
    first_epoch = [i for k in range(3) for batches in ranks for i in batches.image_indices(k)][:6]
    assert sorted(first_epoch) == list(range(6))


def test_normalised_targets_have_zero_mean_and_unit_spread(two_images):
    _, regions = two_images
    options = SamplingOptions(mirror=False)
    means, stds = target_statistics(regions, 2, options)
    for label in (1, 2):
        rows = [
            encode_boxes(torch.as_tensor(r.boxes[m]), torch.as_tensor(r.target_boxes[m])).numpy()
            for r in regions
            if (m := r.labels_at(0.5) == label).any()
        ]
        normalised = (np.concatenate(rows) - means[label]) / stds[label]
        np.testing.assert_allclose(normalised.mean(axis=0), 0, atol=1e-5)
        np.testing.assert_allclose(normalised.std(axis=0), 1, atol=1e-4)
    assert np.all(means[0] == 0) and np.all(stds[0] == 1)


def test_class_boxes_detection_is_per_class_nms_then_per_image_cap():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    class_boxes = np.stack([boxes, boxes + 100], axis=1)  # (3, 2, 4): class 2's boxes elsewhere
    scores = np.array([[0.9, 0.1], [0.8, 0.7], [0.2, 0.6]])
    found = detect_from_class_boxes(class_boxes, scores, DetectOptions(per_image=100))
    assert sorted(zip(found.labels.tolist(), found.scores.round(2).tolist(), strict=True)) == [
        (1, 0.2), (1, 0.9), (2, 0.6), (2, 0.7),
    ]  # fmt: skip
    np.testing.assert_allclose(found.boxes[found.labels == 2], class_boxes[[1, 2], 1])
    capped = detect_from_class_boxes(class_boxes, scores, DetectOptions(per_image=2))
    assert capped.scores.tolist() == pytest.approx([0.9, 0.7])


def test_two_gloo_processes_end_with_the_same_weights(tiny_run, tmp_path):
    """torchrun with two CPU processes: DDP over gloo, disjoint shards, one writer, equal final weights.

    ``--`` ends torchrun's own options: its parser (Python 3.11 argparse) would read ``--run`` as an
    abbreviation of its ``--run-path``."""
    data, base = tiny_run
    run = tmp_path / "run"
    shutil.copytree(base, run)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "rcnn_cli", "--", "finetune", "--data", str(data), "--run", str(run), "--device", "cpu",
        "--iterations", "3", "--scales", "96", "--checkpoint-every", "2",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=Path.cwd())
    assert result.returncode == 0, result.stdout + result.stderr
    manifest = json.loads((run / "fast" / "finetune" / "model.manifest.json").read_text())
    digests = manifest["results"]["rank_weight_digests"]
    assert manifest["results"]["world_size"] == 2 and len(digests) == 2 and digests[0] == digests[1]
    assert result.stdout.count("fine-tuned (fast, 2 processes)") == 1  # one writer
