"""Fast R-CNN's hierarchical sampling and target normalisation."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from stages.core.geometry import encode_boxes
from stages.methods.fast.minibatches import ImageBatches, target_statistics
from stages.methods.fast.options import SamplingOptions
from stages.networks.inputs import scale_factor
from stages.training.matching import LabelledRegions, Matcher
from tests.helpers import write_image


def regions_of(gt: np.ndarray, gt_labels: np.ndarray, proposals: np.ndarray, classes: int) -> LabelledRegions:
    from stages.core.geometry import box_iou

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
    paths, regions, shapes = [], [], [(60, 80), (90, 50)]
    for k, (height, width) in enumerate(shapes):
        path = tmp_path / f"{k}.jpg"
        write_image(path, height, width, seed=k)
        gt = np.array([[10, 10, 40, 40], [20, 5, 45, 50]], np.float32)
        jitter = rng.uniform(-12, 12, (300, 4)).astype(np.float32)
        proposals = np.clip(np.repeat(gt, 150, axis=0) + jitter, 0, min(height, width))
        proposals[:, 2:] = np.maximum(proposals[:, 2:], proposals[:, :2] + 2)
        paths.append(path)
        regions.append(regions_of(gt, np.array([1, 2]), proposals, classes=2))
    return paths, shapes, regions


def test_batches_take_a_quarter_foreground_from_each_image_and_pad(two_images):
    paths, shapes, regions = two_images
    options = SamplingOptions(scales=(120,), max_size=200)
    means, stds = target_statistics(regions, 2, options)
    batches = ImageBatches(paths, shapes, regions, means, stds, options, seed=3)
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


def test_flipped_batch_mirrors_boxes_and_image(two_images):
    paths, shapes, regions = two_images
    options = SamplingOptions(images_per_batch=1, rois_per_batch=8, scales=(60,), max_size=400)
    means, stds = target_statistics(regions, 2, options)
    plain = ImageBatches(paths, shapes, regions, means, stds, replace(options, mirror=False))
    mirrored = ImageBatches(paths, shapes, regions, means, stds, options)
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


@pytest.mark.parametrize("aspect_grouping", [True, False])
def test_ranks_take_disjoint_images_of_an_epoch(two_images, aspect_grouping):
    paths, shapes, regions = two_images
    paths, shapes, regions = paths * 3, shapes * 3, regions * 3  # six images, two an iteration and rank
    options = SamplingOptions(aspect_grouping=aspect_grouping)
    means, stds = target_statistics(regions, 2, options)
    ranks = [ImageBatches(paths, shapes, regions, means, stds, options, rank=r, world_size=2) for r in (0, 1)]
    first_epoch = [i for k in range(3) for batches in ranks for i in batches.image_indices(k)][:6]
    assert sorted(first_epoch) == list(range(6))


def test_aspect_grouping_puts_wide_images_with_wide_and_tall_with_tall(two_images):
    paths, shapes, regions = two_images
    wide, tall = [0, 2, 4, 6], [1, 3, 5]  # seven images: four wide, three tall
    paths, shapes, regions = paths * 4, shapes * 4, regions * 4
    paths, shapes, regions = paths[:7], shapes[:7], regions[:7]
    options = SamplingOptions()
    means, stds = target_statistics(regions, 2, options)
    batches = ImageBatches(paths, shapes, regions, means, stds, options)
    assert batches.epoch_length == 6  # three whole batches an epoch; the seventh image waits
    chosen = [batches.image_indices(k) for k in range(30)]  # ten epochs
    assert all(set(pair) <= set(wide) or set(pair) <= set(tall) for pair in chosen)
    assert {i for pair in chosen for i in pair} == set(wide + tall)


def test_normalised_targets_have_zero_mean_and_unit_spread(two_images):
    _, _, regions = two_images
    options = SamplingOptions(mirror=False)
    means, stds = target_statistics(regions, 2, options)
    for label in (1, 2):
        rows = [
            encode_boxes(torch.as_tensor(r.boxes[m]), torch.as_tensor(r.target_boxes[m])).numpy()
            for r in regions
            if (m := Matcher(options.foreground_iou, options.background_iou)(r.class_iou) == label).any()
        ]
        normalised = (np.concatenate(rows) - means[label]) / stds[label]
        np.testing.assert_allclose(normalised.mean(axis=0), 0, atol=1e-5)
        np.testing.assert_allclose(normalised.std(axis=0), 1, atol=1e-4)
    assert np.all(means[0] == 0) and np.all(stds[0] == 1)
