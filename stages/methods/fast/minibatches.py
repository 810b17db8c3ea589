"""Fast R-CNN's mini-batches (Girshick 2015, section 2.3, "Mini-batch sampling"): hierarchical sampling.

Each mini-batch takes N images, then R / N RoIs from each: a quarter foreground (IoU >= 0.5 with an object,
labelled with its class), the rest background (best IoU in [0.1, 0.5)), drawn without replacement as in the
release (``stages.training.matching.Matcher``, ``stages.training.balanced_sampling.BalancedSampler``).
Each image is flipped horizontally with probability 0.5 and resized so its shorter side is one of
``scales`` (a random one per image when there are several) unless its longer side would pass ``max_size``.
Images of a batch are padded to a common size, not resized to one; with ``aspect_grouping`` (the
release's TRAIN.ASPECT_GROUPING, py-faster-rcnn) a batch's images are all wide or all tall, so that little
of the padded batch is padding.

Batch k of rank r is a pure function of (seed, k, r): images come from a seeded permutation per epoch, the
ranks of a data-parallel run taking disjoint slices of it, so a resumed run sees what an uninterrupted one
would, whichever worker process makes the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from stages.core.geometry import encode_boxes, flip_boxes
from stages.methods.fast.options import SamplingOptions
from stages.networks.fast_rcnn import pooling_rois
from stages.networks.inputs import ImageCache, pad_images, resized_input, scale_factor
from stages.training.balanced_sampling import BalancedSampler
from stages.training.matching import LabelledRegions, Matcher


def _matcher(options: SamplingOptions) -> Matcher:
    return Matcher(options.foreground_iou, options.background_iou)


def _sampler(options: SamplingOptions) -> BalancedSampler:
    """The RoIs of one image: R / N of them, without replacement."""
    return BalancedSampler(
        options.rois_per_batch // options.images_per_batch, options.foreground_fraction, replace=False
    )


def target_statistics(
    regions: Sequence[LabelledRegions], num_classes: int, options: SamplingOptions
) -> tuple[np.ndarray, np.ndarray]:
    """(K + 1, 4) means and standard deviations of each class's regression targets over the foreground
    RoIs of the training set (mirrored copies included when training mirrors), as the release normalises
    them; background, and a class without RoIs, get mean 0 and std 1."""
    sums = np.zeros((num_classes + 1, 4))
    squares = np.zeros((num_classes + 1, 4))
    counts = np.zeros(num_classes + 1)
    matcher = _matcher(options)
    for region in regions:
        labels, foreground, _ = matcher.split(region.class_iou)
        if not len(foreground):
            continue
        targets = encode_boxes(
            torch.as_tensor(region.boxes[foreground]), torch.as_tensor(region.target_boxes[foreground])
        ).numpy()
        copies = [targets, targets * [-1, 1, 1, 1]] if options.mirror else [targets]
        for copy in copies:
            np.add.at(sums, labels[foreground], copy)
            np.add.at(squares, labels[foreground], copy**2)
            np.add.at(counts, labels[foreground], 1)
    seen = counts > 0
    means = np.zeros((num_classes + 1, 4))
    means[seen] = sums[seen] / counts[seen, None]
    stds = np.ones((num_classes + 1, 4))
    stds[seen] = np.sqrt(np.maximum(squares[seen] / counts[seen, None] - means[seen] ** 2, 0.0))
    stds[stds < 1e-6] = 1.0
    means[0], stds[0] = 0.0, 1.0
    return means.astype(np.float32), stds.astype(np.float32)


class ImageBatches:
    """Hierarchical mini-batches of the images at ``paths``, of (height, width) ``shapes``: calling with an
    iteration gives (images (N, 3, H, W) padded, rois (R, 5), labels (R,) int64, targets (R, 4) normalised
    by ``means``/``stds`` (K + 1, 4))."""

    def __init__(
        self,
        paths: Sequence[Path],
        shapes: Sequence[tuple[int, int]],
        regions: Sequence[LabelledRegions],
        means: np.ndarray,
        stds: np.ndarray,
        options: SamplingOptions = SamplingOptions(),
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.paths, self.regions, self.options = list(paths), list(regions), options
        self.means, self.stds = means, stds
        self.seed, self.rank, self.world_size = seed, rank, world_size
        matcher = _matcher(options)
        self.rows = [matcher.split(r.class_iou) for r in self.regions]
        """Each image's (labels, foreground rows, background rows)."""
        self.usable = [i for i, (_, fg, bg) in enumerate(self.rows) if len(fg) or len(bg)]
        self.wide = np.array([shapes[i][1] >= shapes[i][0] for i in self.usable], dtype=bool)
        self.sampler = _sampler(options)
        self.cache = ImageCache()
        self._order: tuple[int, np.ndarray] | None = None

    @property
    def epoch_length(self) -> int:
        """Images an epoch: every usable one, or with aspect grouping whole batches of them."""
        if not self.options.aspect_grouping:
            return len(self.usable)
        count = self.options.images_per_batch
        return max(1, len(self.usable) // count) * count

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Positions in ``usable`` of epoch ``epoch``'s images: a seeded permutation. With aspect grouping,
        the wide and the tall images are permuted apart, one after the other, cut into batches of N and
        the whole batches permuted, as py-faster-rcnn does: every batch is one group but the one batch
        where the wide images end and the tall begin (when the wide are not a multiple of N); the images
        left over (fewer than N) wait for another epoch."""
        if self._order is None or self._order[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            if self.options.aspect_grouping:
                count = self.options.images_per_batch
                grouped = np.concatenate(
                    [rng.permutation(np.flatnonzero(self.wide)), rng.permutation(np.flatnonzero(~self.wide))]
                )
                batches = np.resize(grouped, (self.epoch_length // count, count))  # < N images: repeated
                order = batches[rng.permutation(len(batches))].reshape(-1)
            else:
                order = rng.permutation(len(self.usable))
            self._order = (epoch, order)
        return self._order[1]

    def image_indices(self, iteration: int) -> list[int]:
        """The images of this rank's batch ``iteration``: consecutive slices of the epochs' orders."""
        count = self.options.images_per_batch
        first = (iteration * self.world_size + self.rank) * count
        chosen = []
        for position in range(first, first + count):
            epoch, offset = divmod(position, self.epoch_length)
            chosen.append(self.usable[self.epoch_order(epoch)[offset]])
        return chosen

    def __call__(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        options = self.options
        rng = np.random.default_rng([self.seed, iteration, self.rank])
        images, rois, labels, targets = [], [], [], []
        for slot, index in enumerate(self.image_indices(iteration)):
            region = self.regions[index]
            image = self.cache(self.paths[index])
            height, width = image.shape[:2]
            factor = scale_factor(height, width, int(rng.choice(options.scales)), options.max_size)
            flip = rng.random() < 0.5 and options.mirror  # drawn either way: same RoIs with or without
            matched, foreground, background = self.rows[index]
            rows = self.sampler(foreground, background, rng)
            boxes, goals = region.boxes[rows], region.target_boxes[rows]
            tensor = resized_input(image, factor)
            if flip:
                boxes, goals = flip_boxes(boxes, width), flip_boxes(goals, width)
                tensor = tensor.flip(2)
            row_labels = torch.as_tensor(matched[rows], dtype=torch.int64)
            deltas = encode_boxes(torch.as_tensor(boxes), torch.as_tensor(goals))
            deltas = (deltas - torch.as_tensor(self.means)[row_labels]) / torch.as_tensor(self.stds)[
                row_labels
            ]
            images.append(tensor)
            rois.append(pooling_rois(torch.as_tensor(boxes), torch.full((len(rows),), slot), factor))
            labels.append(row_labels)
            targets.append(torch.where(row_labels[:, None] > 0, deltas, torch.zeros_like(deltas)))
        return pad_images(images), torch.cat(rois), torch.cat(labels), torch.cat(targets)
