"""Faster R-CNN's network (Ren et al., NIPS 2015, section 3): Fast R-CNN (``stages.networks.fast_rcnn``)
with a region proposal network on the same conv5, so that one pass of the conv layers serves both; and
its model files.

``FasterRcnn.proposals`` runs the RPN and its proposal layer on conv5; the rest (RoI pooling, fc6, fc7,
scores and class-specific boxes) is Fast R-CNN's. The anchors' shapes are a buffer of the network, saved
with its weights, so that a model file proposes as it was trained.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stages.methods.faster.options import RpnOptions
from stages.methods.faster.rpn import RegionProposalNetwork, anchor_shapes, grid_anchors, propose
from stages.networks.backbones import Backbone, build_backbone
from stages.networks.fast_rcnn import FastRcnn
from stages.networks.models import TrainedModel, load_model, save_model
from stages.runs.layout import RunLayout

NAME = "faster"


class FasterRcnn(FastRcnn):
    """Fast R-CNN's network (``forward(images, rois)``, ``conv5``, ``pool``, ``head``) and a region
    proposal network (``rpn``) on its conv5 with anchors of ``anchor_sizes`` and ``anchor_ratios``, its
    3 x 3 conv started from N(0, ``rpn_conv_std``^2)."""

    anchor_shapes: torch.Tensor

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        anchor_sizes: Sequence[float] = RpnOptions.anchor_sizes,
        anchor_ratios: Sequence[float] = RpnOptions.anchor_ratios,
        ranks: tuple[int, int] | None = None,
        rpn_conv_std: float = RpnOptions.conv_init_std,
    ):
        super().__init__(backbone, num_classes, ranks)
        self.anchor_sizes, self.anchor_ratios = tuple(anchor_sizes), tuple(anchor_ratios)
        shapes = anchor_shapes(self.anchor_sizes, self.anchor_ratios)
        self.register_buffer("anchor_shapes", shapes)
        self.rpn = RegionProposalNetwork(self.spec.conv5_channels, len(shapes), rpn_conv_std)

    def anchors(self, conv5: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) conv5 -> (h w A, 4) anchors in the scaled image, in the RPN's output order."""
        rows, columns = conv5.shape[-2:]
        return grid_anchors(self.anchor_shapes, rows, columns, self.spec.stride)

    def proposals(
        self,
        conv5: torch.Tensor,
        image_size: tuple[int, int],
        *,
        pre_nms: int,
        post_nms: int,
        nms_iou: float,
        min_size: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, C, h, w) conv5 of an image scaled to (height, width) ``image_size`` -> its proposals (M, 4)
        in the scaled image and their objectness (M,), best first (``rpn.propose``)."""
        logits, deltas = self.rpn(conv5)
        return propose(
            self.anchors(conv5),
            logits[0],
            deltas[0],
            image_size,
            pre_nms=pre_nms,
            post_nms=post_nms,
            nms_iou=nms_iou,
            min_size=min_size,
        )

    def train_only(self, *parts: str) -> None:
        """Leave only ``parts`` trainable: "conv" (less the layers Fast R-CNN freezes, section 4.5),
        "rpn", "head" (fc6, fc7 and the two output layers). The alternating scheme trains two or one of
        them a step (section 3.2)."""
        modules: dict[str, list[nn.Module]] = {
            "conv": [self.conv],
            "rpn": [self.rpn],
            "head": [self.fc6, self.fc7, self.scores, self.deltas],
        }
        unknown = set(parts) - modules.keys()
        if unknown:
            raise ValueError(f"no part {', '.join(sorted(unknown))} in Faster R-CNN")
        self.requires_grad_(False)
        for part in parts:
            for module in modules[part]:
                module.requires_grad_(True)
        self.freeze_early_layers()


def save_faster(path: Path, model: FasterRcnn, classes: Sequence[str], **meta: Any) -> None:
    """A Faster R-CNN model file: weights, backbone, classes, anchors, fc ranks and ``meta`` (the test
    scale and the RPN's test settings)."""
    save_model(
        path,
        model,
        kind=NAME,
        backbone=model.spec.name,
        classes=classes,
        anchor_sizes=list(model.anchor_sizes),
        anchor_ratios=list(model.anchor_ratios),
        ranks=list(model.ranks) if model.ranks else None,
        **meta,
    )


def load_faster(path: Path, command: str, classes: Sequence[str] | None = None) -> TrainedModel[FasterRcnn]:
    """A Faster R-CNN model file (``command`` makes it); classes checked when given."""
    return load_model(path, NAME, _untrained, command=command, classes=classes)


def load_trained(
    run: RunLayout, compressed: bool = False, classes: Sequence[str] | None = None
) -> TrainedModel[FasterRcnn]:
    """The run's trained Faster R-CNN, or its truncated-SVD form (``rcnn compress --method faster``)."""
    files = run.method(NAME)
    path = files.compressed if compressed else files.finetune.model
    return load_faster(path, run.command_for(path), classes)


def _untrained(meta: Mapping[str, Any]) -> FasterRcnn:
    ranks = (int(meta["ranks"][0]), int(meta["ranks"][1])) if meta.get("ranks") else None
    return FasterRcnn(
        build_backbone(meta["backbone"]),
        len(meta["classes"]),
        meta["anchor_sizes"],
        meta["anchor_ratios"],
        ranks,
    )
