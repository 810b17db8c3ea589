"""Supervised pre-training (R-CNN section 2.3), as classification of ground-truth object crops.

The papers pre-train on ImageNet classification. For users without ImageNet weights, and for the demo, this
stage trains the backbone to classify the warped, jittered, mirrored object crops of a split: an N-way
classifier on fc7, discarded afterwards. Writes ``RUN/backbone.pt``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from stages.atomic import ensure_folder
from stages.backbones import Classifier, build_backbone, get_spec, save_model
from stages.errors import UserError
from stages.images import pick_device
from stages.progress import SILENT, Progress
from stages.runs import backbone_path, write_manifest
from stages.training import Solver, classification_step, parameter_groups, train
from stages.voc import Dataset
from stages.windows import WindowBatches, iteration_batches

log = logging.getLogger("rcnn")


@dataclass(frozen=True)
class PretrainOptions:
    """Crop classification: SGD at 0.01, momentum 0.9, weight decay 0.0005 (the ImageNet solver's)."""

    backbone: str = "tiny"
    weights: str | None = None
    iterations: int = 2000
    batch_size: int = 128
    learning_rate: float = 0.01
    step: int = 1500
    weight_decay: float = 0.0005
    jitter: float = 0.1
    seed: int = 0
    checkpoint_every: int = 500
    workers: int = 0
    device: str = "auto"


@dataclass(frozen=True)
class PretrainSummary:
    path: Path
    objects: int
    iterations: int
    final_loss: float
    final_accuracy: float
    seconds: float


def pretrain(
    dataset: Dataset,
    run: Path,
    options: PretrainOptions = PretrainOptions(),
    resume: bool = True,
    progress: Progress = SILENT,
) -> PretrainSummary:
    """Train ``options.backbone`` to classify ``dataset``'s object crops; write ``RUN/backbone.pt``."""
    started = time.perf_counter()
    spec = get_spec(options.backbone)
    if not dataset.annotated:
        raise UserError(f"{dataset.root}: split {dataset.split!r} has no annotations to pre-train on")
    objects = [(i, box, label) for i, r in enumerate(dataset.images) for box, label, difficult
               in zip(r.boxes, r.labels, r.difficult, strict=True) if not difficult]  # fmt: skip
    if not objects:
        raise UserError(f"{dataset.root}: split {dataset.split!r} has no (non-difficult) objects")
    torch.manual_seed(options.seed)
    device = pick_device(options.device)
    model = Classifier(build_backbone(spec.name, options.weights), len(dataset.classes)).to(device)
    batches = WindowBatches(
        [r.path for r in dataset.images],
        np.array([o[0] for o in objects]),
        np.stack([o[1] for o in objects]).astype(np.float32),
        np.array([o[2] - 1 for o in objects]),
        [(np.arange(len(objects)), options.batch_size)],
        spec.input_size,
        spec.context_padding,
        jitter=options.jitter,
        seed=options.seed,
    )
    solver = Solver(
        options.iterations,
        options.learning_rate,
        options.step,
        weight_decay=options.weight_decay,
        checkpoint_every=options.checkpoint_every,
    )

    folder = ensure_folder(Path(run) / "pretrain")
    stamp = {k: v for k, v in asdict(options).items() if k not in ("iterations", "workers", "device")}
    rows = train(
        folder=folder,
        model=model,
        groups=parameter_groups([(model, 1.0, 2.0)], solver.weight_decay),
        solver=solver,
        stamp={**stamp, "classes": list(dataset.classes), "root": str(dataset.root), "split": dataset.split},
        batches=lambda start: iteration_batches(
            batches, start, options.iterations, options.workers, device.type == "cuda"
        ),
        step=classification_step(model, device),
        resume=resume,
        progress=progress,
        description=f"pre-training {spec.name}",
    )
    target = backbone_path(run)
    save_model(target, model, spec.name, kind="pretrain", classes=list(dataset.classes))
    seconds = time.perf_counter() - started
    summary = PretrainSummary(
        target, len(objects), options.iterations, rows[-1]["loss"], rows[-1]["accuracy"], seconds
    )
    write_manifest(
        target,
        stage="pretrain",
        options=options,
        inputs=[],
        seconds=seconds,
        results={
            "objects": len(objects),
            "final_loss": summary.final_loss,
            "accuracy": summary.final_accuracy,
        },
    )
    return summary
