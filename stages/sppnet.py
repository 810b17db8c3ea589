"""SPP-net's network: conv5 once an image (at one or several scales), windows pooled by a spatial pyramid,
then fc6, fc7 (He et al., ECCV 2014, sections 3 and 4).

The conv layers are the backbone's and stay fixed (SPP-net fine-tunes only the fully connected layers);
fc6 is new, since it reads the pyramid (C x 50 values, not pool5's), fc7 starts from the backbone's.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from stages.atomic import ensure_folder
from stages.backbones import Backbone, build_backbone, read_model_file, resolve_backbone, save_model
from stages.errors import UserError
from stages.features import (
    ExtractSummary,
    FeatureCache,
    add_feature_point,
    extract_to_cache,
    features_path,
    record_extraction,
)
from stages.images import pick_device, resized_input
from stages.progress import SILENT, Progress
from stages.rcnn import FinetuneSummary, load_proposals
from stages.runs import (
    describe_input,
    manifest_path,
    method_path,
    proposals_path,
    require_artifact,
    write_manifest,
)
from stages.spp import PYRAMID, project_windows, pyramid_bins, receptive_field, spatial_pyramid_pool
from stages.training import Solver, classification_step, parameter_groups, train
from stages.voc import Dataset

log = logging.getLogger("rcnn")

WINDOW_SIZE = 224
"""A window is pooled at the scale where its area is closest to 224 x 224 (section 4.1): there it spans
14 cells of a stride-16 conv5, enough for the 6 x 6 level to see distinct cells."""


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
        self.fc6 = nn.Sequential(
            nn.Dropout(0.5),
            nn.Linear(spec.conv5_channels * pyramid_bins(self.levels), spec.fc_dim),
            nn.ReLU(True),
        )
        nn.init.normal_(
            self.fc6[1].weight, std=0.01 if spec.fc_dim > 1024 else (2 / self.fc6[1].in_features) ** 0.5
        )
        nn.init.zeros_(self.fc6[1].bias)
        self.fc7 = backbone.fc7

    @property
    def pyramid_dim(self) -> int:
        return self.spec.conv5_channels * pyramid_bins(self.levels)

    @torch.no_grad()
    def conv5(self, image: np.ndarray, factors: Sequence[float], device: torch.device) -> list[torch.Tensor]:
        """(H, W, 3) uint8 image -> one (C, h, w) conv5 map a scale factor."""
        maps = []
        for factor in factors:
            resized = resized_input(image, factor, device)[None]
            maps.append(self.conv(resized.contiguous(memory_format=torch.channels_last))[0])
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
        pooled = torch.empty(len(boxes), self.pyramid_dim, device=boxes.device, dtype=maps[0].dtype)
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


METHOD = "spp"


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


def finetuned_path(run: Path) -> Path:
    """``RUN/spp/finetune/model.pt``."""
    return method_path(run, METHOD, "finetune", "model.pt")


def load_spp(run: Path, classes: Sequence[str] | None = None) -> tuple[SppClassifier, dict, Path]:
    """The fine-tuned SPP-net of ``run`` (checked against ``classes``), its metadata and its file."""
    path = finetuned_path(run)
    require_artifact(path, f"rcnn finetune --method spp --run {run}")
    content = read_model_file(path)
    net = SppNet(build_backbone(content["backbone"]), content["levels"])
    model = SppClassifier(net, content["state_dict"]["scores.weight"].shape[0])
    model.load_state_dict(content["state_dict"])
    if classes is not None and tuple(content["classes"]) != tuple(classes):
        raise UserError(
            f"{path}: trained on classes {', '.join(content['classes'])}, not {', '.join(classes)}"
        )
    return model, {k: v for k, v in content.items() if k != "state_dict"}, path


@dataclass(frozen=True)
class SppExtractOptions:
    """SPP-net features: one scale (688) or the paper's five; the {1, 2, 3, 6} pyramid; each window
    pooled at the scale where it is closest to ``window_size`` squared."""

    scales: tuple[int, ...] = (688,)
    window_size: int = WINDOW_SIZE
    levels: tuple[int, ...] = PYRAMID
    backbone: str | None = None
    weights: str | None = None
    dtype: str = "float16"
    workers: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if not self.scales or min(self.scales) < 16:
            raise UserError("--scales: give shorter-side sizes of at least 16 px")
        if self.window_size < 16:
            raise UserError("--window-size: give at least 16 px")
        if self.dtype not in ("float16", "float32"):
            raise UserError(f"--dtype {self.dtype}: choose float16 or float32")


class SppExtractor:
    """Pyramid features (and fc7 once the fc layers are fine-tuned) of windows, conv5 once a scale."""

    def __init__(
        self, net: SppNet, scales: Sequence[int], window_size: int, device: torch.device, with_fc7: bool
    ):
        self.net = net.to(device).eval()
        self.scales, self.window_size = tuple(scales), window_size
        self.device, self.with_fc7 = device, with_fc7

    @torch.no_grad()
    def __call__(self, image: np.ndarray, boxes: np.ndarray) -> dict[str, torch.Tensor]:
        """(H, W, 3) uint8 image, (N, 4) boxes -> {"pyramid": (N, P)[, "fc7": (N, D)]} on the CPU."""
        factors = scale_factors(*image.shape[:2], self.scales)
        maps = self.net.conv5(image, factors, self.device)
        boxes = torch.as_tensor(np.asarray(boxes, np.float32), device=self.device)
        pyramid = self.net.pyramid(maps, boxes, factors, self.window_size)
        found = {"pyramid": pyramid.cpu()}
        if self.with_fc7:
            found["fc7"] = self.net.head(pyramid).cpu()
        return found


def extract_features(
    dataset: Dataset, run: Path, options: SppExtractOptions = SppExtractOptions(), progress: Progress = SILENT
) -> ExtractSummary:
    """Cache the pyramid (and, after ``rcnn finetune --method spp``, fc7) of every region of the split.

    After fine-tuning, a pyramid-only cache of the split made by the same conv layers with the same
    settings (the one fine-tuning read) is reused: only fc7 is computed, from its stored pyramids.
    """
    started = time.perf_counter()
    device = pick_device(options.device)
    trained_on = None
    if finetuned_path(run).exists():
        model, meta, model_path = load_spp(run, dataset.classes)
        net, with_fc7, conv = model.net, True, {"backbone": meta["backbone"], "weights": str(model_path)}
        trained_on = meta.get("trained_on")
        if tuple(meta["levels"]) != tuple(options.levels):
            raise UserError(
                f"{model_path}: fine-tuned on levels {meta['levels']}, not {list(options.levels)}"
            )
    else:
        backbone, model_path = resolve_backbone(run, options.backbone, options.weights)
        net, with_fc7 = SppNet(backbone, options.levels), False
        conv = {"backbone": backbone.spec.name, "weights": str(model_path) if model_path else options.weights}
        log.info("no fine-tuned SPP-net yet: caching pyramids only; fc7 follows `rcnn finetune --method spp`")
    proposals = load_proposals(run, dataset)
    dims = {"pyramid": net.pyramid_dim, **({"fc7": net.spec.fc_dim} if with_fc7 else {})}
    stamp = {
        "method": METHOD,
        "scales": list(options.scales),
        "window_size": options.window_size,
        "levels": list(options.levels),
        "dtype": options.dtype,
        "conv": conv,
        "model": describe_input(model_path) if model_path else None,
        "proposals": describe_input(proposals_path(run, dataset.split)),
        "root": str(dataset.root),
    }
    record = {
        "manifest_options": {"method": METHOD, **asdict(options)},
        "inputs": [p for p in (model_path,) if p],
        "attrs": {"backbone": net.spec.name, "with_fc7": with_fc7},
    }
    target = features_path(run, METHOD, dataset.split)
    if trained_on and _holds_pyramids(target, stamp, trained_on):
        pyramid_seconds = _seconds_recorded(target) or 0.0
        net.to(device).eval()
        add_feature_point(
            target,
            "fc7",
            net.spec.fc_dim,
            lambda pyramid: _fc7(net, pyramid, device),
            "pyramid",
            {"stamp": json.dumps(stamp, sort_keys=True, default=str), **record["attrs"]},
            progress,
            f"SPP-net fc7 from the cached pyramids ({net.spec.name}, {device.type})",
        )
        return record_extraction(
            target,
            dataset,
            run,
            0,
            time.perf_counter() - started,
            started,
            earlier_seconds=pyramid_seconds,
            **record,
        )
    return extract_to_cache(
        dataset,
        run,
        METHOD,
        SppExtractor(net, options.scales, options.window_size, device, with_fc7),
        proposals,
        stamp,
        dims,
        options.dtype,
        options.workers,
        f"SPP-net features ({net.spec.name}, scales {','.join(map(str, options.scales))}, {device.type})",
        progress,
        started,
        **record,
    )


def _holds_pyramids(path: Path, stamp: dict, trained_on: dict) -> bool:
    """Whether ``path`` is a complete pyramid-only cache made with ``stamp``'s settings by the conv layers
    named in ``trained_on`` (the stamp of the cache the fine-tuned model was trained on)."""
    if not path.exists():
        return False
    try:
        with FeatureCache(path, "") as cache:
            found = json.loads(cache.h5.attrs["stamp"])
            pyramid_only = cache.feature_points == ("pyramid",)
    except UserError:
        return False
    return pyramid_only and found == {**stamp, "conv": trained_on["conv"], "model": trained_on["model"]}


@torch.no_grad()
def _fc7(net: SppNet, pyramid: np.ndarray, device: torch.device) -> np.ndarray:
    """(n, pyramid_dim) stored pyramids -> (n, fc_dim) fc7, in the stored precision."""
    found = net.head(torch.from_numpy(pyramid.astype(np.float32)).to(device))
    return found.cpu().numpy().astype(pyramid.dtype)


@dataclass(frozen=True)
class SppFinetuneOptions:
    """SPP-net fc fine-tuning (section 4.1): fc6, fc7 and a new (N + 1)-way layer on cached pyramids;
    25% foreground (IoU >= 0.5), background IoU in [0.1, 0.5); 250k mini-batches at 1e-4, then 50k at
    1e-5. Mini-batches are drawn from one block of the cache at a time (``block_rows`` regions, read
    once for ``block_iterations`` mini-batches, by default as many as draw about as many windows as the
    block holds), so memory stays bounded and the cache is read a few times, not once a mini-batch."""

    iterations: int = 300000
    learning_rate: float = 0.0001
    step: int = 250000
    momentum: float = 0.9
    weight_decay: float = 0.0005
    batch_size: int = 128
    foreground_fraction: float = 0.25
    foreground_iou: float = 0.5
    background_iou: tuple[float, float] = (0.1, 0.5)
    block_rows: int = 32768
    block_iterations: int | None = None
    seed: int = 0
    checkpoint_every: int = 1000
    device: str = "auto"


class _BlockBatches:
    """Mini-batch k comes from block (k // block_iterations) of a seeded block order; rows sampled in it."""

    def __init__(self, cache: FeatureCache, options: SppFinetuneOptions):
        self.cache, self.options = cache, options
        blocks = cache.blocks([], options.block_rows)
        self.blocks = [(int(cache.offsets[i[0]]), int(cache.offsets[i[-1] + 1])) for i, _ in blocks]
        self.loaded: tuple[int, dict] | None = None

    def _block(self, k: int) -> dict:
        visit = k // (self.options.block_iterations or self.options.block_rows // self.options.batch_size)
        order = np.random.default_rng([self.options.seed, visit // len(self.blocks)]).permutation(
            len(self.blocks)
        )
        index = int(order[visit % len(self.blocks)])
        if self.loaded is None or self.loaded[0] != index:
            start, stop = self.blocks[index]
            h5 = self.cache.h5
            iou = h5["class_iou"][start:stop]
            best = iou.max(axis=1, initial=0.0)
            labels = np.where(best >= self.options.foreground_iou, iou.argmax(axis=1) + 1, 0)
            low, high = self.options.background_iou
            block = {
                "pyramid": h5["pyramid"][start:stop],
                "labels": labels,
                "foreground": np.flatnonzero(labels > 0),
                "background": np.flatnonzero((best >= low) & (best < high)),
            }
            self.loaded = (index, block)
        return self.loaded[1]

    def __call__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        block = self._block(k)
        rng = np.random.default_rng([self.options.seed, k])
        wanted_fg = round(self.options.batch_size * self.options.foreground_fraction)
        pools = [(block["foreground"], min(wanted_fg, len(block["foreground"])))]
        pools.append((block["background"], self.options.batch_size - pools[0][1]))
        rows = np.concatenate([p[rng.integers(0, len(p), n)] for p, n in pools if n and len(p)])
        return torch.from_numpy(block["pyramid"][rows].astype(np.float32)), torch.from_numpy(
            block["labels"][rows]
        )

    def batches(self, start: int, stop: int):
        return (self(k) for k in range(start, stop))


def finetune(
    dataset: Dataset,
    run: Path,
    options: SppFinetuneOptions = SppFinetuneOptions(),
    resume: bool = True,
    progress: Progress = SILENT,
) -> FinetuneSummary:
    """Fine-tune fc6, fc7 and a new (N + 1)-way layer on the split's cached pyramids (conv layers fixed)."""
    started = time.perf_counter()
    torch.manual_seed(options.seed)
    device = pick_device(options.device)
    source = features_path(run, METHOD, dataset.split)
    with FeatureCache.for_training(run, METHOD, dataset.split) as cache:
        if tuple(cache.classes) != tuple(dataset.classes):
            raise UserError(f"{source}: made for classes {', '.join(cache.classes)}, not this dataset's")
        stamp = json.loads(cache.h5.attrs["stamp"])
        net = SppNet(_conv_source(run, stamp["conv"]), stamp["levels"])
        model = SppClassifier(net, len(dataset.classes) + 1).to(device)
        sampler = _BlockBatches(cache, options)
        best = np.concatenate(
            [b["class_iou"].max(axis=1, initial=0.0) for _, b in cache.blocks(["class_iou"])]
        )
        solver = Solver(
            options.iterations,
            options.learning_rate,
            options.step,
            momentum=options.momentum,
            weight_decay=options.weight_decay,
            checkpoint_every=options.checkpoint_every,
        )
        target = finetuned_path(run)
        rows = train(
            folder=ensure_folder(target.parent),
            model=model,
            groups=parameter_groups(
                [(net.fc6, 1.0, 2.0), (net.fc7, 1.0, 2.0), (model.scores, 1.0, 2.0)], options.weight_decay
            ),
            solver=solver,
            stamp={
                **{k: v for k, v in asdict(options).items() if k not in ("iterations", "device")},
                "cache": describe_input(source),
            },
            batches=lambda start: sampler.batches(start, options.iterations),
            step=classification_step(model, device),
            resume=resume,
            progress=progress,
            description=f"fine-tuning fc layers ({net.spec.name}, SPP-net)",
        )
    save_model(
        target,
        model,
        net.spec.name,
        kind="spp",
        classes=list(dataset.classes),
        levels=list(net.levels),
        trained_on=stamp,
    )
    seconds = time.perf_counter() - started
    foreground = int((best >= options.foreground_iou).sum())
    summary = FinetuneSummary(
        target, len(best), foreground, options.iterations, rows[-1]["loss"], rows[-1]["accuracy"], seconds
    )
    write_manifest(
        target,
        stage="finetune",
        options={"method": METHOD, **asdict(options)},
        inputs=[source],
        seconds=seconds,
        results={
            "backbone": net.spec.name,
            "final_loss": summary.final_loss,
            "final_accuracy": summary.final_accuracy,
        },
    )
    return summary


def _seconds_recorded(artifact: Path) -> float | None:
    """The seconds the manifest beside ``artifact`` records, if it has one."""
    manifest = manifest_path(artifact)
    return json.loads(manifest.read_text())["seconds"] if manifest.is_file() else None


def _conv_source(run: Path, conv: dict) -> Backbone:
    """The backbone whose conv layers made a cache: a fine-tuned SPP-net's, or the weights named."""
    if conv["weights"] == str(finetuned_path(run)):
        model, _, _ = load_spp(run)
        backbone = build_backbone(conv["backbone"])
        backbone.conv.load_state_dict(model.net.conv.state_dict())
        backbone.fc7.load_state_dict(model.net.fc7.state_dict())
        return backbone
    backbone, _ = resolve_backbone(run, conv["backbone"], conv["weights"])
    return backbone
