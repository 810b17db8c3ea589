"""Fast R-CNN's network (Girshick, ICCV 2015, section 2): one pass of the conv layers over the whole image,
RoI pooling in place of the last max pool, fc6 and fc7, then two siblings: (K + 1)-way softmax scores and
class-specific box regressors. Fast R-CNN trains it on selective search's boxes; Faster R-CNN (Ren et al.,
NIPS 2015, section 3) puts a region proposal network on its conv5 and trains both, so both methods build
on this module.

- ``pooling_rois``: toolkit boxes -> the RoIs RoI pooling reads, in the release's convention.
- ``FastRcnn``: the network; ``forward(images, rois) -> (scores, deltas)``.
- ``multitask_loss``: L = L_cls(p, u) + lambda [u >= 1] L_loc(t^u, v) (section 2.3, equations 1 to 3).
- ``low_rank_linear``, ``compress``: fc layers as two thinner ones by truncated SVD (section 3.1).

RoI pooling is ``torchvision.ops.roi_pool``: it rounds the scaled RoI corners (round(x / 16)), splits the
RoI into H x W bins with floor/ceil edges and takes the max of each, the release's rules exactly; its
backward adds each output gradient to the cell that was its bin's max (section 2.3, "Back-propagation
through RoI pooling layers").
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stages.core.errors import UserError
from stages.core.geometry import clip_boxes, decode_boxes
from stages.networks.backbones import Backbone, BackboneSpec, conv5_maps
from stages.networks.models import TrainedModel
from stages.networks.options import CompressOptions
from stages.networks.precision import autocast, pooling_input
from stages.runs.devices import synchronize
from stages.runs.layout import write_manifest

FastRcnnT = TypeVar("FastRcnnT", bound="FastRcnn")


def pooling_rois(
    boxes: torch.Tensor, image_index: torch.Tensor, factor: torch.Tensor | float
) -> torch.Tensor:
    """(R, 4) toolkit boxes of images ``image_index`` (R,), scaled by ``factor`` (scalar or (R,)) ->
    (R, 5) RoIs (image, x1, y1, x2, y2) for ``roi_pool``.

    The release's RoIs are 0-based inclusive pixel corners (x2 is the last pixel, one less than the
    toolkit's continuous x2) multiplied by the image's scale factor; this is the one conversion.
    """
    factor = torch.as_tensor(factor, dtype=boxes.dtype, device=boxes.device).reshape(-1, 1)
    corners = torch.cat([boxes[:, :2], boxes[:, 2:] - 1], dim=1) * factor
    return torch.cat([image_index.to(boxes.dtype)[:, None], corners], dim=1)


def _conv_index(conv: nn.Sequential, spec: BackboneSpec, layer: str) -> int:
    """Position in ``conv`` of the Conv2d module of the declared conv layer ``layer``."""
    names = [declared.name for declared in spec.layers if declared.kind == "conv"]
    if layer not in names:
        raise ValueError(f"{spec.name} has no conv layer {layer}")
    positions = [i for i, module in enumerate(conv) if isinstance(module, nn.Conv2d)]
    return positions[names.index(layer)]


def trainable_layers(spec: BackboneSpec) -> list[str]:
    """The layers Fast R-CNN's fine-tuning can start from: any conv layer of ``spec``, or ``fc6`` (no conv
    layer trained; section 4.5, table 5)."""
    return [*(layer.name for layer in spec.layers if layer.kind == "conv"), "fc6"]


def checked_trainable_from(spec: BackboneSpec, layer: str | None) -> str:
    """The first layer fine-tuned: ``layer``, or ``spec.fast_rcnn_trainable_from`` when None; a UserError
    unless ``layer`` is one of ``trainable_layers(spec)``."""
    if layer is None:
        return spec.fast_rcnn_trainable_from
    names = trainable_layers(spec)
    if layer not in names:
        raise UserError(f"--trainable-from {layer}: not a layer of {spec.name}; choose {', '.join(names)}")
    return layer


def low_rank_shape(layer: nn.Linear, rank: int) -> nn.Sequential:
    """Linear(v, t, no bias) then Linear(t, u): the shape of ``layer``'s (u x v) rank-t factorisation,
    for a compressed model's weights to load into."""
    return nn.Sequential(nn.Linear(layer.in_features, rank, bias=False), nn.Linear(rank, layer.out_features))


def low_rank_linear(layer: nn.Linear, rank: int) -> nn.Sequential:
    """``layer`` (W: u x v, bias b) as Linear(v, t, no bias) then Linear(t, u, bias b), from the ``rank``
    largest singular values: W ~ U_t (S_t V_t^T), u t + v t weights instead of u v (section 3.1)."""
    u, s, vh = torch.linalg.svd(layer.weight.detach().double(), full_matrices=False)
    factors = low_rank_shape(layer, rank)
    first, second = cast(nn.Linear, factors[0]), cast(nn.Linear, factors[1])
    with torch.no_grad():
        first.weight.copy_(s[:rank, None] * vh[:rank])
        second.weight.copy_(u[:, :rank])
        second.bias.copy_(layer.bias.detach())
    return factors


class FastRcnn(nn.Module):
    """conv layers, RoI pooling (pool5's H x W grid), fc6, fc7, (K + 1)-way scores and 4 (K + 1) deltas.

    ``forward(images (B, 3, H, W), rois (R, 5))`` -> ``(scores (R, K + 1), deltas (R, K + 1, 4))``: logits
    and class-specific box regression deltas (row 0, background, is not trained). ``ranks`` (fc6, fc7)
    builds the shape of the truncated-SVD form of the fc layers, for a compressed model's weights
    (``compress`` makes them).
    """

    def __init__(self, backbone: Backbone, num_classes: int, ranks: tuple[int, int] | None = None):
        super().__init__()
        spec = backbone.spec
        self.spec, self.num_classes, self.ranks = spec, num_classes, ranks
        self.conv, self.fc6, self.fc7 = backbone.conv, backbone.fc6, backbone.fc7
        self.pool_size, self.spatial_scale = spec.pool5_size, 1.0 / spec.stride
        self.scores = nn.Linear(spec.fc_dim, num_classes + 1)
        self.deltas = nn.Linear(spec.fc_dim, 4 * (num_classes + 1))
        nn.init.normal_(self.scores.weight, std=0.01)
        nn.init.normal_(self.deltas.weight, std=0.001)
        nn.init.zeros_(self.scores.bias)
        nn.init.zeros_(self.deltas.bias)
        if ranks is not None:  # no SVD here: the weights that load replace them (AlexNet's took 95 s)
            for block, rank in zip((self.fc6, self.fc7), ranks, strict=True):
                block[spec.fc_linear_index] = low_rank_shape(self.fc_linear(block), rank)

    def fc_linear(self, block: nn.Sequential) -> nn.Linear:
        """The Linear layer of the fc block ``block`` (fc6 or fc7) of a full-rank network, where the
        backbone declares it."""
        return cast(nn.Linear, block[self.spec.fc_linear_index])

    def factorise(self, ranks: tuple[int, int]) -> None:
        """Replace fc6 and fc7 by truncated SVDs of their weights, of ``ranks`` (section 3.1)."""
        for block, rank in zip((self.fc6, self.fc7), ranks, strict=True):
            block[self.spec.fc_linear_index] = low_rank_linear(self.fc_linear(block), rank)
        self.ranks = ranks

    def freeze_early_layers(self, first_trainable: str | None = None) -> None:
        """Freeze the conv layers before ``first_trainable``: a conv layer's name, ``"fc6"`` (every conv
        layer frozen) or None, the paper's cut-off ``spec.fast_rcnn_trainable_from`` (section 4.5: conv3_1
        and up for VGG16, conv2 and up for the small nets). A UserError for any other name."""
        layer = checked_trainable_from(self.spec, first_trainable)
        first = len(self.conv) if layer == "fc6" else _conv_index(self.conv, self.spec, layer)
        for module in list(self.conv)[:first]:
            module.requires_grad_(False)

    def conv5(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, C, h, w) conv5 features (small images padded: ``conv5_maps``)."""
        return conv5_maps(self.conv, self.spec, images)

    def pool(self, conv5: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) maps, (R, 5) RoIs -> (R, C H W) RoI-pooled features."""
        from torchvision.ops import roi_pool

        size = (self.pool_size, self.pool_size)
        conv5 = pooling_input(conv5)
        return roi_pool(conv5, rois.to(conv5.dtype), size, self.spatial_scale).flatten(1)

    def head(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(R, C H W) pooled features -> (scores (R, K + 1), deltas (R, K + 1, 4))."""
        fc7 = self.fc7(self.fc6(pooled))
        return self.scores(fc7), self.deltas(fc7).unflatten(1, (-1, 4))

    def forward(self, images: torch.Tensor, rois: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.pool(self.conv5(images), rois))


def multitask_loss(
    scores: torch.Tensor,
    deltas: torch.Tensor,
    labels: torch.Tensor,
    targets: torch.Tensor,
    box_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """(R, K + 1) logits, (R, K + 1, 4) deltas, (R,) labels u, (R, 4) normalised targets v ->
    L = -log p_u + lambda [u >= 1] sum_i smooth_L1(t^u_i - v_i), averaged over the R RoIs (section 2.3);
    with the two parts and the accuracy for the log."""
    classification = F.cross_entropy(scores, labels)
    foreground = torch.nonzero(labels > 0).flatten()
    chosen = deltas[foreground, labels[foreground]]
    localisation = F.smooth_l1_loss(chosen, targets[foreground], beta=1.0, reduction="sum") / len(labels)
    accuracy = (scores.argmax(1) == labels).float().mean()
    parts = {"cls_loss": classification.item(), "box_loss": localisation.item(), "accuracy": accuracy.item()}
    return classification + box_weight * localisation, parts


def fold_target_normalisation(model: FastRcnn, means: np.ndarray, stds: np.ndarray) -> None:
    """Make the box layer predict raw deltas: trained on (t - mean_u) / std_u, its weights are scaled by
    the class's std and its biases by std then shifted by the mean, as the release does when saving.
    ``means``, ``stds``: (K + 1, 4)."""
    device = model.deltas.weight.device  # the model's, on a GPU too
    means_t = torch.as_tensor(means, dtype=torch.float32, device=device).reshape(-1)
    stds_t = torch.as_tensor(stds, dtype=torch.float32, device=device).reshape(-1)
    with torch.no_grad():
        model.deltas.weight.mul_(stds_t[:, None])
        model.deltas.bias.mul_(stds_t).add_(means_t)


def compress(model: FastRcnnT, ranks: tuple[int, int]) -> FastRcnnT:
    """A copy of ``model`` with fc6 and fc7 replaced by their rank-``ranks`` truncated SVDs."""
    if model.ranks is not None:
        raise UserError("the model is already compressed")
    for name, block, rank in zip(("fc6", "fc7"), (model.fc6, model.fc7), ranks, strict=True):
        layer = model.fc_linear(block)
        limit = min(layer.in_features, layer.out_features)
        if not 1 <= rank < limit:
            shape = f"{layer.out_features} x {layer.in_features}"
            raise UserError(f"--{name}-rank {rank}: choose 1 to {limit - 1} ({name} is {shape})")
    compressed = copy.deepcopy(model)  # of its own type: Faster R-CNN's keeps its RPN
    compressed.factorise(ranks)
    return compressed


@dataclass(frozen=True)
class CompressSummary:
    path: Path
    ranks: tuple[int, int]
    parameters_before: int
    parameters_after: int
    seconds: float


def compress_file(
    trained: TrainedModel[FastRcnnT],
    target: Path,
    options: CompressOptions,
    save: Callable[[Path, FastRcnnT], None],
) -> CompressSummary:
    """``rcnn compress``: the ``trained`` network with fc6 and fc7 replaced by truncated SVDs of the ranks
    ``options`` give (the paper's ratios by default), written to ``target`` by ``save`` (the method's
    model file, with what the trained one records), with its manifest."""
    started = time.perf_counter()
    chosen = options.ranks(trained.module.spec.fc_dim)
    smaller = compress(trained.module, chosen)
    save(target, smaller)
    before, after = _fc_parameters(trained.module), _fc_parameters(smaller)
    summary = CompressSummary(target, chosen, before, after, time.perf_counter() - started)
    write_manifest(
        target,
        stage="compress",
        options={**asdict(options), "ranks": list(chosen)},
        inputs=[trained.path],
        seconds=summary.seconds,
        results={"fc_parameters_before": before, "fc_parameters_after": after},
    )
    return summary


def _fc_parameters(model: FastRcnn) -> int:
    return sum(p.numel() for block in (model.fc6, model.fc7) for p in block.parameters())


def score_regions(
    model: FastRcnn,
    conv5: torch.Tensor,
    proposals: torch.Tensor,
    factor: float,
    image_size: tuple[int, int],
    precision: str = "fp32",
) -> tuple[np.ndarray, np.ndarray]:
    """The test pass after conv5 (section 3): (1, C, h, w) ``conv5`` of an image scaled by ``factor``,
    (N, 4) ``proposals`` on the image (height, width) ``image_size`` -> (probabilities (N, K), each
    class's box (N, K, 4), clipped to the image). The network computes in ``precision``; softmax and
    box decoding in float32."""
    device = conv5.device
    rois = pooling_rois(proposals, torch.zeros(len(proposals), device=device), factor)
    with autocast(precision, device):
        scores, deltas = model.head(model.pool(conv5, rois))
    scores, deltas = scores.float(), deltas.float()
    probabilities = torch.softmax(scores, dim=1)[:, 1:]
    classes = deltas.shape[1] - 1
    moved = decode_boxes(proposals.repeat_interleave(classes, 0), deltas[:, 1:].reshape(-1, 4))
    synchronize(device)
    boxes = clip_boxes(moved.cpu().numpy(), *image_size).reshape(len(proposals), classes, 4)
    return probabilities.cpu().numpy(), boxes
