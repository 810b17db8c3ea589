"""Fast R-CNN's stages (Girshick, ICCV 2015): end-to-end fine-tuning with the multi-task loss, on one
process or data-parallel over many (``torchrun``), truncated-SVD compression, and detection.

- ``finetune``: hierarchical mini-batches (``stages.fast_sampling``), SGD at 0.001 with biases at 2x,
  x0.1 after 30k of 40k iterations, momentum 0.9, weight decay 0.0005, the layers before
  ``fast_rcnn_trainable_from`` frozen; writes ``RUN/fast/finetune/model.pt`` with the box layer predicting
  raw deltas (the target normalisation folded in).
- ``compress_run``: fc6 and fc7 by truncated SVD, ``RUN/fast/compressed/model.pt``.
- ``FastDetector``: one forward pass an image; softmax scores and class-specific boxes for every proposal.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from stages.atomic import ensure_folder
from stages.backbones import resolve_backbone
from stages.errors import UserError
from stages.fast_sampling import ImageBatches, SamplingOptions, scale_factor, target_statistics
from stages.fastrcnn import (
    METHOD,
    FastRcnn,
    compress,
    default_ranks,
    fold_target_normalisation,
    load_fast,
    multitask_loss,
    pooling_rois,
    save_fast,
)
from stages.geometry import clip_boxes, decode_boxes
from stages.images import pick_device, resized_input
from stages.progress import SILENT, Progress
from stages.rcnn import labelled_split, load_proposals
from stages.runs import method_path, proposals_path, require_artifact, write_manifest
from stages.training import Solver, parameter_groups, train
from stages.voc import Dataset
from stages.windows import iteration_batches

log = logging.getLogger("rcnn")


def finetuned_path(run: Path) -> Path:
    """``RUN/fast/finetune/model.pt``."""
    return method_path(run, METHOD, "finetune", "model.pt")


def compressed_path(run: Path) -> Path:
    """``RUN/fast/compressed/model.pt``."""
    return method_path(run, METHOD, "compressed", "model.pt")


@dataclass(frozen=True)
class FastFinetuneOptions:
    """Fast R-CNN training (section 2.3 and 4): the paper's solver and sampling; ``scales`` one (600) or
    several (a random one an image); ``test_scale`` (default: the training scale, or 600 with several)."""

    backbone: str | None = None
    weights: str | None = None
    iterations: int = 40000
    learning_rate: float = 0.001
    step: int = 30000
    gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0005
    box_weight: float = 1.0
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    test_scale: int | None = None
    seed: int = 0
    checkpoint_every: int = 1000
    workers: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        sampling = self.sampling
        if not sampling.scales or min(sampling.scales) < 16 or sampling.max_size < max(sampling.scales):
            raise UserError("--scales: give shorter sides of at least 16 px, none above --max-size")
        if sampling.images_per_batch < 1 or sampling.rois_per_batch < sampling.images_per_batch:
            raise UserError("--images-per-batch and --rois-per-batch: at least one RoI an image")
        if not 16 <= self.resolved_test_scale <= sampling.max_size:
            raise UserError(
                f"--test-scale {self.resolved_test_scale}: give a shorter side of at least 16 px, "
                f"not above --max-size {sampling.max_size}"
            )

    @property
    def resolved_test_scale(self) -> int:
        scales = self.sampling.scales
        return self.test_scale or (scales[0] if len(scales) == 1 else 600)


@dataclass(frozen=True)
class FastFinetuneSummary:
    path: Path
    images: int
    foreground: int
    iterations: int
    rank: int
    world_size: int
    final_loss: float
    final_accuracy: float
    seconds: float


@contextmanager
def distributed(device_name: str) -> Iterator[tuple[int, int, torch.device]]:
    """(rank, world size, device) of this process. Under ``torchrun`` (WORLD_SIZE > 1) it joins the
    process group: NCCL with one GPU a process (LOCAL_RANK) when CUDA is used, gloo on CPUs."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(device_name)
    if world_size == 1:
        yield 0, 1, device
        return
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield dist.get_rank(), world_size, device
    finally:
        dist.destroy_process_group()


def weight_digest(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer, in state-dict order: equal digests, equal weights."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _gather(value: str, world_size: int) -> list[str]:
    if world_size == 1:
        return [value]
    import torch.distributed as dist

    found: list = [None] * world_size
    dist.all_gather_object(found, value)
    return found


def finetune(
    dataset: Dataset,
    run: Path,
    options: FastFinetuneOptions = FastFinetuneOptions(),
    resume: bool = True,
    progress: Progress = SILENT,
) -> FastFinetuneSummary:
    """Train Fast R-CNN end to end on the split's images and proposals; write the model file.

    Under ``torchrun`` each process trains on its own slice of every epoch's images (DDP averages the
    gradients), and only rank 0 writes the checkpoint, log, model and manifest.
    """
    started = time.perf_counter()
    if not dataset.annotated:
        raise UserError(f"{dataset.root}: split {dataset.split!r} has no annotations to train on")
    with distributed(options.device) as (rank, world_size, device):
        torch.manual_seed(options.seed)
        backbone, weights_file = resolve_backbone(run, options.backbone, options.weights)
        regions = labelled_split(dataset, load_proposals(run, dataset))
        means, stds = target_statistics(regions, len(dataset.classes), options.sampling)
        batches = ImageBatches(
            [r.path for r in dataset.images],
            regions,
            means,
            stds,
            options.sampling,
            seed=options.seed,
            rank=rank,
            world_size=world_size,
        )
        if not batches.usable:
            raise UserError(f"{dataset.root}: split {dataset.split!r} gives no foreground or background RoIs")
        model = FastRcnn(backbone, len(dataset.classes)).to(device)
        model.freeze_early_layers()
        runner = model
        if world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            runner = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
        torch.manual_seed(options.seed + rank)  # each process its own dropout masks
        target = finetuned_path(run)
        stamp = {
            k: v
            for k, v in asdict(options).items()
            if k not in ("iterations", "workers", "device", "test_scale")
        }
        rows = train(
            folder=ensure_folder(target.parent),
            model=model,
            groups=parameter_groups([(model, 1.0, 2.0)], options.weight_decay),
            solver=Solver(
                options.iterations,
                options.learning_rate,
                options.step,
                options.gamma,
                options.momentum,
                options.weight_decay,
                options.checkpoint_every,
            ),
            stamp={
                **stamp,
                "classes": list(dataset.classes),
                "weights_file": str(weights_file),
                "world_size": world_size,
            },
            batches=lambda start: iteration_batches(
                batches, start, options.iterations, options.workers, device.type == "cuda"
            ),
            step=_multitask_step(runner, device, options.box_weight),
            resume=resume,
            progress=progress if rank == 0 else SILENT,
            description=f"training Fast R-CNN ({backbone.spec.name}, {world_size} x {device.type})",
            writer=rank == 0,
        )
        digests = _gather(weight_digest(model), world_size)
        if len(set(digests)) != 1:
            raise RuntimeError(f"data-parallel ranks ended with different weights: {digests}")
        if rank == 0:
            fold_target_normalisation(model, means, stds)
            save_fast(
                target,
                model,
                dataset.classes,
                scales=list(options.sampling.scales),
                max_size=options.sampling.max_size,
                test_scale=options.resolved_test_scale,
            )
    seconds = time.perf_counter() - started
    foreground = int(sum((r.labels_at(options.sampling.foreground_iou) > 0).sum() for r in regions))
    summary = FastFinetuneSummary(
        target,
        len(batches.usable),
        foreground,
        options.iterations,
        rank,
        world_size,
        rows[-1]["loss"],
        rows[-1]["accuracy"],
        seconds,
    )
    if rank == 0:
        write_manifest(
            target,
            stage="finetune",
            options={"method": METHOD, **asdict(options)},
            inputs=[proposals_path(run, dataset.split), *([weights_file] if weights_file else [])],
            seconds=seconds,
            results={
                "backbone": backbone.spec.name,
                "world_size": world_size,
                "rank_weight_digests": digests,
                "foreground_rois": foreground,
                "final_loss": summary.final_loss,
                "final_accuracy": summary.final_accuracy,
            },
        )
    return summary


def _multitask_step(runner: torch.nn.Module, device: torch.device, box_weight: float):
    def step(batch):
        images, rois, labels, targets = (t.to(device, non_blocking=True) for t in batch)
        scores, deltas = runner(images, rois)
        return multitask_loss(scores, deltas, labels, targets, box_weight)

    return step


def load_model(run: Path, compressed: bool = False, classes=None) -> tuple[FastRcnn, dict, Path]:
    """The trained (or compressed) Fast R-CNN of a run, its metadata and file."""
    path = compressed_path(run) if compressed else finetuned_path(run)
    command = f"rcnn compress --run {run}" if compressed else f"rcnn finetune --method fast --run {run}"
    require_artifact(path, command)
    model, meta = load_fast(path, classes)
    return model, meta, path


@dataclass(frozen=True)
class CompressSummary:
    path: Path
    ranks: tuple[int, int]
    parameters_before: int
    parameters_after: int
    seconds: float


def compress_run(run: Path, ranks: tuple[int | None, int | None] = (None, None)) -> CompressSummary:
    """Replace fc6 and fc7 of the run's Fast R-CNN by truncated SVDs (section 3.1); ranks default to the
    paper's VGG16 ratios of the fc width (``default_ranks``)."""
    started = time.perf_counter()
    model, meta, source = load_model(run)
    defaults = default_ranks(model)
    chosen = (ranks[0] or defaults[0], ranks[1] or defaults[1])
    smaller = compress(model, chosen)
    target = compressed_path(run)
    extra = {k: meta[k] for k in ("scales", "max_size", "test_scale")}
    save_fast(target, smaller, meta["classes"], **extra)
    before, after = _fc_parameters(model), _fc_parameters(smaller)
    summary = CompressSummary(target, chosen, before, after, time.perf_counter() - started)
    write_manifest(
        target,
        stage="compress",
        options={"fc6_rank": chosen[0], "fc7_rank": chosen[1]},
        inputs=[source],
        seconds=summary.seconds,
        results={"fc_parameters_before": before, "fc_parameters_after": after},
    )
    return summary


def _fc_parameters(model: FastRcnn) -> int:
    return sum(p.numel() for block in (model.fc6, model.fc7) for p in block.parameters())


class FastDetector:
    """Fast R-CNN at test time (section 3): the image at one scale, conv5 once, every proposal RoI-pooled;
    ``(image, boxes (N, 4)) -> (probabilities (N, K), class boxes (N, K, 4))``, boxes clipped to the image.
    ``last_timing`` holds the seconds of the conv and the RoI-pooling + fc parts of the last call."""

    def __init__(self, model: FastRcnn, scale: int, max_size: int, device: torch.device):
        self.model = model.to(device).eval()
        self.scale, self.max_size, self.device = scale, max_size, device
        self.last_timing = (0.0, 0.0)

    @torch.no_grad()
    def __call__(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        height, width = image.shape[:2]
        factor = scale_factor(height, width, self.scale, self.max_size)
        started = time.perf_counter()
        conv5 = self.model.conv5(resized_input(image, factor, self.device)[None])
        _synchronise(self.device)
        middle = time.perf_counter()
        proposals = torch.as_tensor(np.asarray(boxes, np.float32), device=self.device)
        rois = pooling_rois(proposals, torch.zeros(len(proposals), device=self.device), factor)
        scores, deltas = self.model.head(self.model.pool(conv5, rois))
        probabilities = torch.softmax(scores, dim=1)[:, 1:]
        classes = deltas.shape[1] - 1
        moved = decode_boxes(proposals.repeat_interleave(classes, 0), deltas[:, 1:].reshape(-1, 4))
        _synchronise(self.device)
        self.last_timing = (middle - started, time.perf_counter() - middle)
        moved = clip_boxes(moved.cpu().numpy(), height, width).reshape(len(proposals), classes, 4)
        return probabilities.cpu().numpy(), moved


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def detector_for(
    run: Path, compressed: bool, device: torch.device, classes=None
) -> tuple[FastDetector, dict, Path]:
    """The run's Fast R-CNN as a detector at its test scale, with the model file's metadata and path."""
    model, meta, path = load_model(run, compressed, classes)
    return FastDetector(model, meta["test_scale"], meta["max_size"], device), meta, path
