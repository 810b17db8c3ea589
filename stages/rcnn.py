"""R-CNN's network stages: region fine-tuning on warped proposals and the fc7/pool5 feature cache.

Girshick et al., CVPR 2014, section 2.3 (fine-tuning) and 2.2 (features); the SVMs and the box regressors
trained on the cache live in ``stages.svm`` and ``stages.bbox``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from stages.atomic import ensure_folder
from stages.backbones import Classifier, load_classifier, resolve_backbone, save_model
from stages.errors import UserError
from stages.features import ExtractSummary, extract_to_cache
from stages.images import pick_device, to_network_input
from stages.progress import SILENT, Progress
from stages.proposals import read_proposals
from stages.regions import LabelledRegions, label_regions
from stages.runs import describe_input, method_path, proposals_path, require_artifact, write_manifest
from stages.training import Solver, classification_step, parameter_groups, train
from stages.voc import Dataset
from stages.warp import warp_regions
from stages.windows import WindowBatches, iteration_batches

log = logging.getLogger("rcnn")

METHOD = "rcnn"


def finetuned_path(run: Path, method: str = METHOD) -> Path:
    """``RUN/<method>/finetune/model.pt``."""
    return method_path(run, method, "finetune", "model.pt")


def load_proposals(run: Path, dataset: Dataset) -> dict[str, np.ndarray]:
    """The split's proposals, checked to cover every image of ``dataset``."""
    path = proposals_path(run, dataset.split)
    require_artifact(path, f"rcnn propose --data {dataset.root} --split {dataset.split} --run {run}")
    proposals = read_proposals(path)
    missing = [r.image_id for r in dataset.images if r.image_id not in proposals]
    if missing:
        raise UserError(
            f"{path}: no proposals for {len(missing)} images (first: {missing[0]}); rerun propose"
        )
    return proposals


def labelled_split(dataset: Dataset, proposals: dict[str, np.ndarray]) -> list[LabelledRegions]:
    """Every image's ground truth and proposals with their overlaps, in split order."""
    return [label_regions(r, proposals[r.image_id], len(dataset.classes)) for r in dataset.images]


@dataclass(frozen=True)
class FinetuneOptions:
    """R-CNN fine-tuning (section 2.3 and the release's solver): SGD at 0.001, x0.1 every 20k of 40k
    iterations, momentum 0.9, weight decay 0.0005; new layer at 10x (weights) and 20x (biases); mini-batches
    of 32 windows with IoU >= 0.5 (any class) and 96 background windows, mirrored at random."""

    backbone: str | None = None
    weights: str | None = None
    iterations: int = 40000
    learning_rate: float = 0.001
    step: int = 20000
    gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0005
    foreground: int = 32
    background: int = 96
    foreground_iou: float = 0.5
    mirror: bool = True
    seed: int = 0
    checkpoint_every: int = 1000
    workers: int = 0
    device: str = "auto"


@dataclass(frozen=True)
class FinetuneSummary:
    path: Path
    windows: int
    foreground: int
    iterations: int
    final_loss: float
    final_accuracy: float
    seconds: float


def finetune(
    dataset: Dataset,
    run: Path,
    options: FinetuneOptions = FinetuneOptions(),
    resume: bool = True,
    progress: Progress = SILENT,
) -> FinetuneSummary:
    """Fine-tune the backbone as an (N + 1)-way classifier of warped proposals; writes the model file."""
    started = time.perf_counter()
    if not dataset.annotated:
        raise UserError(f"{dataset.root}: split {dataset.split!r} has no annotations to fine-tune on")
    torch.manual_seed(options.seed)
    device = pick_device(options.device)
    backbone, weights_file = resolve_backbone(run, options.backbone, options.weights)
    spec = backbone.spec
    regions = labelled_split(dataset, load_proposals(run, dataset))
    labels = np.concatenate([r.labels_at(options.foreground_iou) for r in regions])
    foreground = np.flatnonzero(labels > 0)
    background = np.flatnonzero(labels == 0)
    if len(foreground) == 0 or len(background) == 0:
        raise UserError(
            f"{dataset.root}: split {dataset.split!r} gives no foreground or no background windows"
        )
    batches = WindowBatches(
        [r.path for r in dataset.images],
        np.repeat(np.arange(len(regions)), [len(r.boxes) for r in regions]),
        np.concatenate([r.boxes for r in regions]),
        labels,
        [(foreground, options.foreground), (background, options.background)],
        spec.input_size,
        spec.context_padding,
        mirror=options.mirror,
        seed=options.seed,
    )
    model = Classifier(backbone, len(dataset.classes) + 1).to(device)
    solver = Solver(
        options.iterations,
        options.learning_rate,
        options.step,
        options.gamma,
        options.momentum,
        options.weight_decay,
        options.checkpoint_every,
    )

    target = finetuned_path(run)
    stamp = {k: v for k, v in asdict(options).items() if k not in ("iterations", "workers", "device")}
    rows = train(
        folder=ensure_folder(target.parent),
        model=model,
        groups=parameter_groups(
            [(model.backbone, 1.0, 2.0), (model.scores, 10.0, 20.0)], options.weight_decay
        ),
        solver=solver,
        stamp={**stamp, "classes": list(dataset.classes), "weights_file": str(weights_file)},
        batches=lambda start: iteration_batches(
            batches, start, options.iterations, options.workers, device.type == "cuda"
        ),
        step=classification_step(model, device),
        resume=resume,
        progress=progress,
        description=f"fine-tuning {spec.name} (R-CNN)",
    )
    save_model(target, model, spec.name, kind="rcnn", classes=list(dataset.classes))
    seconds = time.perf_counter() - started
    summary = FinetuneSummary(
        target,
        len(labels),
        len(foreground),
        options.iterations,
        rows[-1]["loss"],
        rows[-1]["accuracy"],
        seconds,
    )
    write_manifest(
        target,
        stage="finetune",
        options=options,
        inputs=[proposals_path(run, dataset.split), *([weights_file] if weights_file else [])],
        seconds=seconds,
        results={
            "backbone": spec.name,
            "windows": len(labels),
            "foreground_windows": len(foreground),
            "final_loss": summary.final_loss,
            "final_accuracy": summary.final_accuracy,
        },
    )
    return summary


def load_finetuned(run: Path, classes: tuple[str, ...], method: str = METHOD) -> tuple[Classifier, Path]:
    """The fine-tuned network of ``method``, checked to be trained on ``classes``."""
    path = finetuned_path(run, method)
    require_artifact(path, f"rcnn finetune --method {method} --run {run}")
    model, meta = load_classifier(path)
    if tuple(meta.get("classes", ())) != tuple(classes):
        raise UserError(
            f"{path}: trained on classes {', '.join(meta.get('classes', []))}, "
            f"not this dataset's {', '.join(classes)}; fine-tune again or pass --classes"
        )
    return model, path


class RegionExtractor:
    """pool5 and fc7 of warped regions: the R-CNN feature pipeline, ``batch_size`` windows at a time."""

    def __init__(self, model: Classifier, device: torch.device, batch_size: int = 256):
        self.backbone = model.backbone.to(device).eval()
        self.device, self.batch_size = device, batch_size

    @torch.no_grad()
    def __call__(self, image: np.ndarray, boxes: np.ndarray) -> dict[str, torch.Tensor]:
        """(H, W, 3) uint8 image, (N, 4) boxes -> {"pool5": (N, P), "fc7": (N, D)} float32 on the CPU."""
        spec = self.backbone.spec
        tensor = to_network_input(image, self.device)
        boxes_t = torch.as_tensor(np.asarray(boxes, dtype=np.float32), device=self.device)
        pool5, fc7 = [], []
        for chunk in boxes_t.split(self.batch_size):
            crops = warp_regions(tensor, chunk, spec.input_size, spec.context_padding)
            pooled, features = self.backbone(crops)
            pool5.append(pooled.cpu())
            fc7.append(features.cpu())
        if not pool5:
            return {"pool5": torch.zeros(0, spec.pool5_dim), "fc7": torch.zeros(0, spec.fc_dim)}
        return {"pool5": torch.cat(pool5), "fc7": torch.cat(fc7)}


@dataclass(frozen=True)
class ExtractOptions:
    """Feature caching: float16 by default (half the disk; the SVMs and regressors do not notice)."""

    dtype: str = "float16"
    batch_size: int = 256
    workers: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.dtype not in ("float16", "float32"):
            raise UserError(f"--dtype {self.dtype}: choose float16 or float32")


def extract_features(
    dataset: Dataset, run: Path, options: ExtractOptions = ExtractOptions(), progress: Progress = SILENT
) -> ExtractSummary:
    """Cache pool5 and fc7 of every ground-truth box and proposal of the split to the method's HDF5 file."""
    started = time.perf_counter()
    device = pick_device(options.device)
    model, model_path = load_finetuned(run, dataset.classes)
    proposals = load_proposals(run, dataset)
    spec = model.backbone.spec
    stamp = {
        "method": METHOD,
        "dtype": options.dtype,
        "model": describe_input(model_path),
        "proposals": describe_input(proposals_path(run, dataset.split)),
        "root": str(dataset.root),
    }
    return extract_to_cache(
        dataset,
        run,
        METHOD,
        RegionExtractor(model, device, options.batch_size),
        proposals,
        stamp,
        {"fc7": spec.fc_dim, "pool5": spec.pool5_dim},
        options.dtype,
        options.workers,
        f"R-CNN features ({spec.name}, {device.type})",
        progress,
        started,
        manifest_options={"method": METHOD, **asdict(options)},
        inputs=[model_path],
        attrs={"backbone": spec.name},
    )
