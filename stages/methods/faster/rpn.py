"""The region proposal network (Ren et al., NIPS 2015, section 3.1): anchors on every conv5 cell, a small
network that scores each anchor's objectness and regresses a box from it, the anchors' training labels and
loss, and the proposal layer that turns its outputs into proposals.

Anchors are listed cell by cell, row-major, the anchors of a cell together (ratio-major, then size: the
order of py-faster-rcnn's and torchvision's generators); the network's outputs are flattened in the same
order, so anchor i, objectness i and deltas i belong together. Objectness is one logistic score an anchor
(the paper's "alternatively, logistic regression to produce k scores").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stages.core.geometry import box_iou, decode_boxes, encode_boxes
from stages.methods.faster.options import RpnOptions
from stages.training.balanced_sampling import BalancedSampler
from stages.training.matching import IGNORED, Matcher, best_of_each_object

POSITIVE = 1


def anchor_shapes(sizes: Sequence[float], ratios: Sequence[float]) -> torch.Tensor:
    """(A, 4) anchors centred on (0, 0), A = len(ratios) len(sizes), ratio-major: area size^2 and
    height / width = ratio, so width = size / sqrt(ratio) and height = size sqrt(ratio)."""
    sizes_t = torch.as_tensor(sizes, dtype=torch.float32)
    roots = torch.as_tensor(ratios, dtype=torch.float32).sqrt()
    widths = (sizes_t[None, :] / roots[:, None]).reshape(-1)
    heights = (sizes_t[None, :] * roots[:, None]).reshape(-1)
    return torch.stack([-widths, -heights, widths, heights], dim=1) / 2


def grid_anchors(shapes: torch.Tensor, rows: int, columns: int, stride: int) -> torch.Tensor:
    """(A, 4) anchor ``shapes`` centred on every cell of a (rows, columns) conv5 map of ``stride`` ->
    (rows columns A, 4) anchors in the scaled image: cell (i, j) covers [j stride, (j + 1) stride) x
    [i stride, (i + 1) stride) and centres its anchors on the cell's centre."""
    device = shapes.device
    ys = (torch.arange(rows, dtype=torch.float32, device=device) + 0.5) * stride
    xs = (torch.arange(columns, dtype=torch.float32, device=device) + 0.5) * stride
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    centres = torch.stack([x, y, x, y], dim=-1).reshape(-1, 1, 4)
    return (centres + shapes[None]).reshape(-1, 4)


class RegionProposalNetwork(nn.Module):
    """A 3 x 3 conv with ReLU over conv5 (as many channels as conv5: 512 for VGG16, 256 for ZF), then two
    sibling 1 x 1 convs: an objectness logit and 4 box deltas for each of ``anchors_per_cell`` anchors.
    New layers start from N(0, 0.01^2), biases 0 (section 3.1.3); the 3 x 3 conv's weights from
    N(0, ``conv_std``^2) when given (``RpnOptions.conv_init_std``).

    ``forward(conv5 (B, C, h, w))`` -> ``(logits (B, h w A), deltas (B, h w A, 4))`` in anchor order.
    """

    def __init__(self, channels: int, anchors_per_cell: int, conv_std: float = 0.01):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.objectness = nn.Conv2d(channels, anchors_per_cell, 1)
        self.deltas = nn.Conv2d(channels, 4 * anchors_per_cell, 1)
        for layer, std in ((self.conv, conv_std), (self.objectness, 0.01), (self.deltas, 0.01)):
            nn.init.normal_(layer.weight, std=std)
            nn.init.zeros_(cast(torch.Tensor, layer.bias))

    def forward(self, conv5: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = F.relu(self.conv(conv5))
        logits = self.objectness(hidden).permute(0, 2, 3, 1).flatten(1)
        batch, _, rows, columns = hidden.shape
        deltas = self.deltas(hidden).view(batch, -1, 4, rows, columns).permute(0, 3, 4, 1, 2)
        return logits, deltas.reshape(batch, -1, 4)


def anchor_targets(
    anchors: np.ndarray,
    gt_boxes: np.ndarray,
    image_size: tuple[int, int],
    options: RpnOptions,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """The training labels of (N, 4) ``anchors`` of an image of (height, width) ``image_size`` with objects
    ``gt_boxes`` (G, 4), both in the scaled image (section 3.1.2) -> (labels (N,) int64: 1 positive,
    0 negative, -1 not in the mini-batch; targets (N, 4): each anchor's deltas to the object it overlaps
    most, zero where it overlaps none).

    Anchors that cross the image border are left out. Positive: IoU above ``positive_iou`` with an
    object, or an object's best anchor (``best_of_each_object``); negative: below ``negative_iou`` with
    every object. ``anchors_per_image`` of them are drawn, at most ``positive_fraction`` positive, the
    rest negative (``BalancedSampler``, without replacement, as py-faster-rcnn's anchor target layer).
    """
    height, width = image_size
    labels = np.full(len(anchors), IGNORED, dtype=np.int64)
    targets = np.zeros((len(anchors), 4), dtype=np.float32)
    inside = np.flatnonzero(
        (anchors[:, 0] >= 0) & (anchors[:, 1] >= 0) & (anchors[:, 2] <= width) & (anchors[:, 3] <= height)
    )
    iou = box_iou(anchors[inside], gt_boxes)  # (n, G)
    matcher = Matcher(options.positive_iou, (0.0, options.negative_iou), strictly_above=True)
    inner = matcher(iou.max(axis=1, keepdims=True, initial=0.0))
    inner[best_of_each_object(iou)] = POSITIVE
    positive, negative = np.flatnonzero(inner == POSITIVE), np.flatnonzero(inner == 0)
    sampler = BalancedSampler(options.anchors_per_image, options.positive_fraction, replace=False)
    chosen = sampler(positive, negative, rng)
    labels[inside[chosen]] = inner[chosen]
    if len(gt_boxes) and len(positive):
        matched = np.asarray(gt_boxes, dtype=np.float32)[iou[positive].argmax(axis=1)]
        deltas = encode_boxes(torch.as_tensor(anchors[inside[positive]]), torch.as_tensor(matched))
        targets[inside[positive]] = deltas.numpy()
    return labels, targets


def rpn_loss(
    logits: torch.Tensor,
    deltas: torch.Tensor,
    labels: torch.Tensor,
    targets: torch.Tensor,
    positions: int,
    box_weight: float = 10.0,
    beta: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """(N,) objectness logits, (N, 4) deltas, (N,) labels (1, 0, -1 unsampled), (N, 4) targets ->
    L = (1 / N_cls) sum_i L_cls(p_i, p_i*) + lambda (1 / N_reg) sum_i p_i* smooth_L1(t_i - t_i*)
    (section 3.1.2, equation 1): log loss over the N_cls sampled anchors, smooth L1 over the positive ones
    normalised by N_reg = ``positions`` (the conv5 cells), lambda = ``box_weight``; with its two parts."""
    sampled = labels >= 0
    count = max(1, int(sampled.sum()))
    objectness = F.binary_cross_entropy_with_logits(
        logits[sampled], labels[sampled].to(logits.dtype), reduction="sum"
    )
    positive = labels == POSITIVE
    localisation = F.smooth_l1_loss(deltas[positive], targets[positive], beta=beta, reduction="sum")
    classification = objectness / count
    regression = localisation / max(1, positions)
    parts = {"rpn_cls_loss": classification.item(), "rpn_box_loss": regression.item()}
    return classification + box_weight * regression, parts


def propose(
    anchors: torch.Tensor,
    logits: torch.Tensor,
    deltas: torch.Tensor,
    image_size: tuple[int, int],
    *,
    pre_nms: int,
    post_nms: int,
    nms_iou: float = 0.7,
    min_size: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The proposal layer (section 3.1; py-faster-rcnn's order): (N, 4) anchors, (N,) logits and (N, 4)
    deltas of an image of (height, width) ``image_size`` -> (boxes (M, 4), objectness (M,)), best
    first: every anchor's box decoded and clipped to the image, those narrower or shorter than
    ``min_size`` dropped, the ``pre_nms`` best kept, NMS at ``nms_iou``, the ``post_nms`` best kept."""
    from torchvision.ops import nms

    height, width = image_size
    boxes = decode_boxes(anchors, deltas.float())
    boxes = torch.stack(
        [boxes[:, 0].clamp(0, width), boxes[:, 1].clamp(0, height), boxes[:, 2].clamp(0, width),
         boxes[:, 3].clamp(0, height)],
        dim=1,
    )  # fmt: skip
    large = ((boxes[:, 2] - boxes[:, 0]) >= min_size) & ((boxes[:, 3] - boxes[:, 1]) >= min_size)
    boxes, scores = boxes[large], logits.float()[large]
    best = scores.topk(min(pre_nms, len(scores))).indices
    boxes, scores = boxes[best], scores[best]
    kept = nms(boxes, scores, nms_iou)[:post_nms]
    return boxes[kept], torch.sigmoid(scores[kept])
