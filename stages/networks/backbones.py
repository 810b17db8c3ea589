"""The backbones of the lineage: conv1..conv5, pool5, fc6, fc7, with their conv geometry declared.

Every backbone has the same four named feature points: ``conv5`` (the last conv layer's ReLU output),
``pool5`` (the pooled grid fed to fc6), ``fc6`` and ``fc7``. R-CNN warps regions to ``input_size``
(R-CNN section 2.1); SPP-net and Fast R-CNN replace pool5 and use ``layers`` (kernel, stride and padding of
every conv and pool layer up to conv5) to map image windows onto conv5.

- ``alexnet``, ``vgg16``: torchvision's architectures; ``imagenet`` weights come from torchvision.
- ``zf5``: the ZF-5 net of SPP-net (He et al. 2014, table 1) with the paper's floor(k/2) padding.
- ``tiny``: five conv layers, pool5, fc6, fc7, sized to train from scratch on a laptop CPU in a minute.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from stages.core.errors import UserError
from stages.networks.models import is_model_file, read_weights
from stages.runs.layout import RunLayout


@dataclass(frozen=True)
class Layer:
    """One conv or max-pool layer up to conv5: square kernel, stride and padding; channels out (conv)."""

    name: str
    kind: Literal["conv", "pool"]
    kernel: int
    stride: int
    padding: int
    channels: int = 0


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone declares: its layers up to conv5, how pool5 pools, fc width, warp size and context,
    and where it comes from. Everything that differs between backbones is a field here."""

    name: str
    layers: tuple[Layer, ...]
    pool5_size: int
    fc_dim: int
    input_size: int
    context_padding: int
    description: str
    torchvision_model: str | None = None
    """The torchvision builder that makes the network (with its ImageNet weights); None: built from
    ``layers`` here."""
    lrn_after: tuple[str, ...] = ()
    """Conv layers followed by local response normalisation (ZF-5's conv1 and conv2)."""
    pool5: Layer | None = None
    """pool5 as a fixed max pool (``tiny``'s 2 x 2); None: adaptive max pooling to the pool5 grid, or
    torchvision's own pool5 for its models."""
    fc_linear_index: int = 1
    """Where the Linear sits in the fc6 and fc7 blocks: 1 in (Dropout, Linear, ReLU), ours and AlexNet's;
    0 in VGG16's (Linear, ReLU, Dropout)."""
    fast_rcnn_trainable_from: str = "conv2"
    """The first conv layer Fast R-CNN fine-tunes; those before it stay frozen (Fast R-CNN section 4.5:
    conv3_1 and up for VGG16, conv2 and up for the small nets)."""

    @property
    def has_imagenet_weights(self) -> bool:
        return self.torchvision_model is not None

    @property
    def conv5_channels(self) -> int:
        return [layer.channels for layer in self.layers if layer.kind == "conv"][-1]

    @property
    def pool5_dim(self) -> int:
        return self.conv5_channels * self.pool5_size**2

    @property
    def stride(self) -> int:
        """Total stride of conv5 relative to the image."""
        return math.prod(layer.stride for layer in self.layers)

    @property
    def min_input_side(self) -> int:
        """The smallest image side that leaves conv5 at least one cell: every layer's output side is
        floor((side + 2 padding - kernel) / stride) + 1, taken back from one conv5 cell."""
        side = 1
        for layer in reversed(self.layers):
            side = max(1, (side - 1) * layer.stride + layer.kernel - 2 * layer.padding)
        return side


def conv5_maps(conv: nn.Module, spec: BackboneSpec, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) normalised images -> (B, C, h, w) conv5 maps of the conv layers ``conv`` of ``spec``.

    An image narrower or shorter than ``spec.min_input_side`` is zero-padded at the bottom and right
    (zero is the mean pixel, R-CNN's fill), so every image has a map and keeps its coordinates.
    """
    height, width = images.shape[-2:]
    side = spec.min_input_side
    if height < side or width < side:
        images = nn.functional.pad(images, (0, max(0, side - width), 0, max(0, side - height)))
    return conv(images.contiguous(memory_format=torch.channels_last))


def _conv(name: str, channels: int, kernel: int, stride: int = 1, padding: int | None = None) -> Layer:
    return Layer(name, "conv", kernel, stride, kernel // 2 if padding is None else padding, channels)


def _pool(name: str, kernel: int, stride: int, padding: int = 0) -> Layer:
    return Layer(name, "pool", kernel, stride, padding)


def _vgg16_layers() -> tuple[Layer, ...]:
    layers: list[Layer] = []
    for block, (channels, repeats) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)), start=1):
        layers += [_conv(f"conv{block}_{i}", channels, 3) for i in range(1, repeats + 1)]
        if block < 5:
            layers.append(_pool(f"pool{block}", 2, 2))
    return tuple(layers)


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec(
            name="alexnet",
            layers=(
                _conv("conv1", 64, 11, 4, 2),
                _pool("pool1", 3, 2),
                _conv("conv2", 192, 5),
                _pool("pool2", 3, 2),
                _conv("conv3", 384, 3),
                _conv("conv4", 256, 3),
                _conv("conv5", 256, 3),
            ),
            pool5_size=6,
            fc_dim=4096,
            input_size=224,
            context_padding=16,
            description="torchvision AlexNet (one-GPU variant of Krizhevsky et al. 2012)",
            torchvision_model="alexnet",
        ),
        BackboneSpec(
            name="vgg16",
            layers=_vgg16_layers(),
            pool5_size=7,
            fc_dim=4096,
            input_size=224,
            context_padding=16,
            description="torchvision VGG16 (Simonyan and Zisserman 2015)",
            torchvision_model="vgg16",
            fc_linear_index=0,
            fast_rcnn_trainable_from="conv3_1",
        ),
        BackboneSpec(
            name="zf5",
            layers=(
                _conv("conv1", 96, 7, 2),
                _pool("pool1", 3, 2, 1),
                _conv("conv2", 256, 5, 2),
                _pool("pool2", 3, 2, 1),
                _conv("conv3", 384, 3),
                _conv("conv4", 384, 3),
                _conv("conv5", 256, 3),
            ),
            pool5_size=6,
            fc_dim=4096,
            input_size=224,
            context_padding=16,
            description="ZF-5 of SPP-net (no public weights: random init or --weights PATH)",
            lrn_after=("conv1", "conv2"),
        ),
        BackboneSpec(
            name="tiny",
            layers=(
                _conv("conv1", 32, 5, 2),
                _pool("pool1", 2, 2),
                _conv("conv2", 64, 5, 2),
                _pool("pool2", 2, 2),
                _conv("conv3", 128, 3),
                _conv("conv4", 128, 3),
                _conv("conv5", 128, 3),
            ),
            pool5_size=2,
            fc_dim=512,
            input_size=64,
            context_padding=5,
            description="five conv layers sized to train from scratch on a CPU (the demo's default)",
            pool5=_pool("pool5", 2, 2),
        ),
    )
}


def get_spec(name: str) -> BackboneSpec:
    """The registered backbone ``name``; UserError listing the choices otherwise."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise UserError(f"--backbone {name!r}: choose one of {', '.join(BACKBONES)}") from None


class Backbone(nn.Module):
    """conv1..conv5 (``conv``), pool5, fc6, fc7 of a registered backbone.

    ``forward(images (B, 3, H, W))`` -> ``(pool5 (B, pool5_dim), fc7 (B, fc_dim))``, the two features
    R-CNN caches (fc7 for the SVMs, pool5 for box regression).
    """

    def __init__(
        self,
        spec: BackboneSpec,
        conv: nn.Sequential,
        pool5: nn.Module,
        fc6: nn.Sequential,
        fc7: nn.Sequential,
    ):
        super().__init__()
        self.spec = spec
        self.conv = conv
        self.pool5 = pool5
        self.fc6 = fc6
        self.fc7 = fc7

    def head(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, C, s, s) or (B, C s s) pooled conv5 features -> (B, fc_dim) fc7."""
        return self.fc7(self.fc6(pooled.flatten(1)))

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) images -> (B, C s s) pool5, flattened."""
        return self.pool5(self.conv(images.contiguous(memory_format=torch.channels_last))).flatten(1)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.pooled(images)
        return pooled, self.head(pooled)


def _fc(in_features: int, out_features: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, out_features), nn.ReLU(inplace=True))


def _conv_stack(layers: tuple[Layer, ...], lrn_after: tuple[str, ...] = ()) -> nn.Sequential:
    """conv (+ ReLU, + LRN where named) and max-pool modules built from the declared layers."""
    modules: list[nn.Module] = []
    channels = 3
    for layer in layers:
        if layer.kind == "conv":
            modules += [
                nn.Conv2d(channels, layer.channels, layer.kernel, layer.stride, layer.padding),
                nn.ReLU(inplace=True),
            ]
            channels = layer.channels
            if layer.name in lrn_after:
                modules.append(nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0))
        else:
            modules.append(nn.MaxPool2d(layer.kernel, layer.stride, layer.padding))
    return nn.Sequential(*modules)


def _init_from_scratch(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _build(spec: BackboneSpec, imagenet: bool = False) -> Backbone:
    """The backbone in channels-last layout (about 2x faster convolutions on CPUs, as fast on GPUs)."""
    return _modules(spec, imagenet).to(memory_format=torch.channels_last)


def _modules(spec: BackboneSpec, imagenet: bool) -> Backbone:
    if spec.torchvision_model is not None:
        import torchvision

        builder = getattr(torchvision.models, spec.torchvision_model)
        try:
            net = builder(weights="IMAGENET1K_V1" if imagenet else None)
        except (OSError, RuntimeError) as exc:  # offline, bad cache: the download failed
            raise UserError(
                f"--weights imagenet: could not get torchvision's {spec.name} weights ({exc}); "
                "download them when online, or pass --weights PATH"
            ) from None
        pooling = nn.Sequential(net.features[-1], net.avgpool)
        return Backbone(spec, net.features[:-1], pooling, net.classifier[:3], net.classifier[3:6])
    dropout = 0.5
    conv = _conv_stack(spec.layers, spec.lrn_after)
    pool5: nn.Module = (
        nn.AdaptiveMaxPool2d(spec.pool5_size)
        if spec.pool5 is None
        else nn.MaxPool2d(spec.pool5.kernel, spec.pool5.stride, spec.pool5.padding)
    )
    net = Backbone(
        spec, conv, pool5, _fc(spec.pool5_dim, spec.fc_dim, dropout), _fc(spec.fc_dim, spec.fc_dim, dropout)
    )
    _init_from_scratch(net)
    return net


def build_backbone(name: str, weights: str | Path | None = None) -> Backbone:
    """Backbone ``name`` with ``weights``: None (random init), ``"imagenet"`` (torchvision's) or a file.

    A file is a state dict (torchvision's layout or ours) or a model file this toolkit wrote.
    """
    spec = get_spec(name)
    if weights == "imagenet":
        if not spec.has_imagenet_weights:
            raise UserError(f"--weights imagenet: no ImageNet weights for {name}; use --weights PATH")
        return _build(spec, imagenet=True)
    backbone = _build(spec)
    if weights is not None:
        load_backbone_weights(backbone, read_weights(Path(weights)), Path(weights))
    return backbone


def _torchvision_key(key: str) -> str | None:
    """torchvision's ``features.i``/``classifier.i`` keys -> ours (fc6 = classifier[:3], fc7 = [3:6])."""
    head, _, rest = key.partition(".")
    if head == "features":
        return f"conv.{rest}"
    if head == "classifier":
        index = int(rest.split(".")[0])
        return f"fc6.{rest}" if index < 3 else f"fc7.{rest}" if index < 6 else None
    return key


def load_backbone_weights(backbone: Backbone, content: Any, path: Path) -> None:
    """Load ``content`` read from ``path``, a state dict (torchvision's layout or ours) or a toolkit model
    file, into ``backbone``; UserError naming the file and the keys that do not match."""
    if is_model_file(content):
        if content["backbone"] != backbone.spec.name:
            raise UserError(f"{path}: weights of a {content['backbone']} backbone, not {backbone.spec.name}")
        state = {
            k.removeprefix("backbone."): v
            for k, v in content["state_dict"].items()
            if k.startswith("backbone.")
        }
    elif isinstance(content, dict) and all(isinstance(v, torch.Tensor) for v in content.values()):
        renamed = {_torchvision_key(k): v for k, v in content.items()}
        state = {k: v for k, v in renamed.items() if k is not None}
    else:
        raise UserError(f"{path}: expected a state dict of tensors or an rcnn model file")
    own = backbone.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong_shape:
        problems = [
            f"{what} keys {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong-shape", wrong_shape))
            if keys
        ]
        raise UserError(f"{path}: does not match the {backbone.spec.name} backbone: {'; '.join(problems)}")
    backbone.load_state_dict(state)


class Classifier(nn.Module):
    """A backbone and a linear layer on fc7: (B, 3, S, S) crops -> (B, outputs) logits.

    Pre-training uses N outputs (the object classes); R-CNN fine-tuning N + 1 (background first).
    """

    def __init__(self, backbone: Backbone, outputs: int):
        super().__init__()
        self.backbone = backbone
        self.scores = nn.Linear(backbone.spec.fc_dim, outputs)
        nn.init.normal_(self.scores.weight, std=0.01)
        nn.init.zeros_(self.scores.bias)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.scores(self.backbone(crops)[1])

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], outputs: int) -> Classifier:
        """An untrained classifier shaped like the model file ``meta`` describes."""
        return cls(_build(get_spec(meta["backbone"])), outputs)


def resolve_backbone(
    run: RunLayout, backbone: str | None, weights: str | None
) -> tuple[Backbone, Path | None]:
    """The backbone a training stage starts from, and the weights file read (None for imagenet/random).

    weights None: the run's pre-trained backbone (``rcnn pretrain``); ``"imagenet"``: torchvision's
    weights for ``backbone``; ``"random"``: random initialisation; otherwise a weights file (its own
    backbone name when rcnn wrote it, else ``backbone``). The file is read once.
    """
    if weights in ("imagenet", "random"):
        if backbone is None:
            raise UserError(f"--weights {weights} needs --backbone ({', '.join(BACKBONES)})")
        return build_backbone(backbone, None if weights == "random" else weights), None
    path = run.pretrain.model if weights is None else Path(weights)
    if weights is None and not path.exists():
        raise UserError(
            f"{path}: not found; make it with `{run.command_for(path)}`, or pass --weights imagenet|PATH"
        )
    content = read_weights(path)
    name = content["backbone"] if is_model_file(content) else None
    if name is not None and backbone is not None and backbone != name:
        raise UserError(f"{path}: weights of a {name} backbone, but --backbone {backbone}")
    name = name or backbone
    if name is None:
        raise UserError(f"{path}: a plain state dict; say which backbone it is with --backbone")
    net = _build(get_spec(name))
    load_backbone_weights(net, content, path)
    return net, path
