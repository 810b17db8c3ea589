"""SPP-net's network: conv5 once an image (at one or several scales), windows pooled by a spatial pyramid,
then fc6, fc7 (He et al., ECCV 2014, sections 3 and 4).

The conv layers are the backbone's and stay fixed (SPP-net fine-tunes only the fully connected layers);
fc6 is new, since it reads the pyramid (C x 50 values, not pool5's), fc7 starts from the backbone's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from stages.methods.spp.options import PYRAMID, WINDOW_SIZE
from stages.methods.spp.pooling import project_windows, pyramid_bins, receptive_field, spatial_pyramid_pool
from stages.networks.backbones import Backbone, build_backbone, conv5_maps
from stages.networks.inputs import resized_input
from stages.networks.models import TrainedModel, load_model
from stages.networks.precision import pooling_dtype
from stages.runs.layout import RunLayout

NAME = "spp"

FINE_TUNED = "fine-tuned"
"""What a feature cache's stamp names as its conv layers when the run's fine-tuned SPP-net made it, rather
than a path: a cache taken from another run (``rcnn study``) then names this run's network."""


def scale_factors(height: int, width: int, scales: Sequence[int]) -> list[float]:
    """Resize factors that bring the shorter side of a (height, width) image to each scale."""
    return [s / min(height, width) for s in scales]


def pick_scales(boxes: torch.Tensor, factors: Sequence[float], target: int) -> torch.Tensor:
    """(R,) index of the factor at which each box's area is closest to ``target`` squared (SPP-net 4.1).

    Closeness is measured on a log scale, the natural one for sizes.
    """
    areas = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp(min=1.0)
    scaled = areas[:, None] * torch.tensor(factors, dtype=areas.dtype, device=areas.device) ** 2
    return (torch.log(scaled) - 2 * np.log(target)).abs().argmin(dim=1)


class SppNet(nn.Module):
    """conv1..conv5 of ``backbone`` (frozen), the pyramid over projected windows, fc6 (new), fc7.

    ``conv5(image, factors)`` computes the maps once an image a scale; ``pyramid(maps, boxes, factors)``
    pools every window at its scale; ``head(pyramid) -> fc7``.
    """

    def __init__(self, backbone: Backbone, levels: Sequence[int] = PYRAMID):
        super().__init__()
        spec = backbone.spec
        self.spec = spec
        self.levels = tuple(levels)
        self.field = receptive_field(spec.layers)
        self.conv = backbone.conv.requires_grad_(False)
        linear = nn.Linear(spec.conv5_channels * pyramid_bins(self.levels), spec.fc_dim)
        self.fc6 = nn.Sequential(nn.Dropout(0.5), linear, nn.ReLU(True))
        nn.init.normal_(linear.weight, std=0.01 if spec.fc_dim > 1024 else (2 / linear.in_features) ** 0.5)
        nn.init.zeros_(linear.bias)
        self.fc7 = backbone.fc7

    @property
    def pyramid_dim(self) -> int:
        return self.spec.conv5_channels * pyramid_bins(self.levels)

    @torch.no_grad()
    def conv5(self, image: np.ndarray, factors: Sequence[float], device: torch.device) -> list[torch.Tensor]:
        """(H, W, 3) uint8 image -> one (C, h, w) conv5 map a scale factor."""
        maps = []
        for factor in factors:
            maps.append(conv5_maps(self.conv, self.spec, resized_input(image, factor, device)[None])[0])
        return maps

    def pyramid(
        self,
        maps: list[torch.Tensor],
        boxes: torch.Tensor,
        factors: Sequence[float],
        window_size: int = WINDOW_SIZE,
    ) -> torch.Tensor:
        """(R, 4) image boxes -> (R, pyramid_dim): each pooled on the map of the scale where its area is
        closest to ``window_size`` squared (``pick_scales``)."""
        chosen = pick_scales(boxes, factors, window_size)
        dtype = pooling_dtype(maps[0].dtype)
        pooled = torch.empty(len(boxes), self.pyramid_dim, device=boxes.device, dtype=dtype)
        for index, (conv5, factor) in enumerate(zip(maps, factors, strict=True)):
            rows = torch.nonzero(chosen == index).flatten()
            if len(rows):
                cells = project_windows(boxes[rows] * factor, self.field, conv5.shape[1], conv5.shape[2])
                zeros = torch.zeros(len(rows), dtype=torch.long, device=boxes.device)
                pooled[rows] = spatial_pyramid_pool(conv5[None], cells, zeros, self.levels)
        return pooled

    def head(self, pyramid: torch.Tensor) -> torch.Tensor:
        """(R, pyramid_dim) -> (R, fc_dim) fc7."""
        return self.fc7(self.fc6(pyramid))


class SppClassifier(nn.Module):
    """The SPP-net fc layers and a new (N + 1)-way layer: (R, pyramid_dim) pyramids -> (R, N + 1) logits."""

    def __init__(self, net: SppNet, outputs: int):
        super().__init__()
        self.net = net
        self.scores = nn.Linear(net.spec.fc_dim, outputs)
        nn.init.normal_(self.scores.weight, std=0.01)
        nn.init.zeros_(self.scores.bias)

    def forward(self, pyramid: torch.Tensor) -> torch.Tensor:
        return self.scores(self.net.head(pyramid))


def load_spp(run: RunLayout, classes: Sequence[str] | None = None) -> TrainedModel[SppClassifier]:
    """The fine-tuned SPP-net of ``run``, checked against ``classes`` when given. Its ``meta`` records
    the pyramid ``levels`` and ``trained_on``: the stamp of the pyramid cache it was trained on (conv
    layers, scales, window size)."""
    return load_model(
        run.method(NAME).finetune.model,
        NAME,
        _untrained,
        command=run.command_for(run.method(NAME).finetune.model),
        classes=classes,
    )


def _untrained(meta: Mapping[str, Any]) -> SppClassifier:
    net = SppNet(build_backbone(meta["backbone"]), meta["levels"])
    return SppClassifier(net, len(meta["classes"]) + 1)
