"""Faster R-CNN's mini-batches (Ren et al., NIPS 2015, section 3.1.3): each arises from one image, scaled so
that its shorter side is one of ``scales`` (the longer at most ``max_size``) and mirrored with probability
0.5; the anchors and RoIs an image contributes are drawn in the training step, where the network's own
proposals are known (``stages.methods.faster.finetune``), or, in the alternating scheme's Fast R-CNN
steps, from an earlier step's proposals of the image, given in the original image and scaled and mirrored
with it.

Batch k of rank r is a pure function of (seed, k, r): images come from a seeded permutation per epoch, the
ranks of a data-parallel run taking disjoint slices of it, so a resumed run sees what an uninterrupted one
would.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from stages.core.geometry import clip_boxes, flip_boxes
from stages.datasets.records import ImageRecord
from stages.methods.faster.options import FasterFinetuneOptions
from stages.networks.inputs import ImageCache, resized_input, scale_factor


class ImageBatches:
    """Calling with an iteration gives (image (1, 3, H, W), its non-difficult objects' boxes (G, 4) in the
    scaled image, their labels (G,) int64, the scale factor (1,), the seeds (3,) of the step's own
    draws: (seed, iteration, rank), and the image's ``proposals`` (P, 4) in the scaled image: (0, 4)
    without them)."""

    def __init__(
        self,
        records: Sequence[ImageRecord],
        options: FasterFinetuneOptions,
        *,
        proposals: Sequence[np.ndarray] | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.records, self.options, self.proposals = list(records), options, proposals
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.cache = ImageCache()
        self._order: tuple[int, np.ndarray] | None = None

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The images of epoch ``epoch``, a seeded permutation."""
        if self._order is None or self._order[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._order = (epoch, rng.permutation(len(self.records)))
        return self._order[1]

    def image_index(self, iteration: int) -> int:
        """This rank's image of batch ``iteration``: consecutive slices of the epochs' orders."""
        epoch, offset = divmod(iteration * self.world_size + self.rank, len(self.records))
        return int(self.epoch_order(epoch)[offset])

    def __call__(self, iteration: int) -> tuple[torch.Tensor, ...]:
        options = self.options
        rng = np.random.default_rng([self.seed, iteration, self.rank])
        index = self.image_index(iteration)
        record = self.records[index]
        image = self.cache(record.path)
        height, width = image.shape[:2]
        factor = scale_factor(height, width, int(rng.choice(options.scales)), options.max_size)
        flip = rng.random() < 0.5 and options.mirror
        tensor = resized_input(image, factor)
        scaled_height, scaled_width = tensor.shape[1:]
        keep = ~record.difficult
        boxes = clip_boxes(record.boxes[keep] * factor, scaled_height, scaled_width)
        given = self.proposals[index] if self.proposals is not None else np.zeros((0, 4), np.float32)
        proposals = clip_boxes(given * factor, scaled_height, scaled_width)
        if flip:
            tensor = tensor.flip(2)
            boxes, proposals = flip_boxes(boxes, scaled_width), flip_boxes(proposals, scaled_width)
        return (
            tensor[None],
            torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            torch.as_tensor(record.labels[keep], dtype=torch.int64),
            torch.tensor([factor], dtype=torch.float64),
            torch.tensor([self.seed, iteration, self.rank], dtype=torch.int64),
            torch.as_tensor(proposals, dtype=torch.float32).reshape(-1, 4),
        )
