"""Supervised pre-training (R-CNN section 2.3), as classification of ground-truth object crops.

The papers pre-train on ImageNet classification. For users without ImageNet weights, and for the demo, this
stage trains the backbone to classify the warped, jittered, mirrored object crops of a split: an N-way
classifier on fc7, discarded afterwards. Writes the run's ``backbone.pt``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stages.backbones import Classifier, build_backbone, get_spec
from stages.datasets.records import Dataset
from stages.errors import UserError
from stages.models import save_model
from stages.progress import SILENT, Progress
from stages.runs import RunLayout
from stages.sampling import BalancedSampler
from stages.training import (
    TrainingOptions,
    TrainingStage,
    TrainingSummary,
    classification_step,
    iteration_batches,
    parameter_groups,
)
from stages.windows import WindowBatches


@dataclass(frozen=True)
class PretrainOptions(TrainingOptions):
    """Crop classification: SGD at 0.01, momentum 0.9, weight decay 0.0005 (the ImageNet solver's), x0.1
    after 1500 of 2000 iterations; 128 crops a mini-batch, jittered by up to 10% of their size."""

    iterations: int = 2000
    learning_rate: float = 0.01
    step: int = 1500
    checkpoint_every: int = 500
    backbone: str = "tiny"
    weights: str | None = None
    batch_size: int = 128
    jitter: float = 0.1
    workers: int = 0


def pretrain(
    dataset: Dataset,
    run: RunLayout,
    options: PretrainOptions = PretrainOptions(),
    resume: bool = True,
    progress: Progress = SILENT,
) -> TrainingSummary:
    """Train ``options.backbone`` to classify ``dataset``'s object crops; write the run's backbone."""
    spec = get_spec(options.backbone)
    if not dataset.annotated:
        raise UserError(f"{dataset.root}: split {dataset.split!r} has no annotations to pre-train on")
    objects = [(i, box, label) for i, r in enumerate(dataset.images) for box, label, difficult
               in zip(r.boxes, r.labels, r.difficult, strict=True) if not difficult]  # fmt: skip
    if not objects:
        raise UserError(f"{dataset.root}: split {dataset.split!r} has no (non-difficult) objects")
    stage = TrainingStage("pretrain", options, run.pretrain, resume=resume, progress=progress)
    model = Classifier(build_backbone(spec.name, options.weights), len(dataset.classes)).to(stage.device)
    batches = WindowBatches(
        [r.path for r in dataset.images],
        np.array([o[0] for o in objects]),
        np.stack([o[1] for o in objects]).astype(np.float32),
        np.array([o[2] - 1 for o in objects]),
        np.arange(len(objects)),
        np.zeros(0, np.int64),
        BalancedSampler(options.batch_size, 1.0, replace=True),
        spec.input_size,
        spec.context_padding,
        jitter=options.jitter,
        seed=options.seed,
    )
    stage.train(
        model,
        parameter_groups([(model, 1.0, 2.0)], options.weight_decay),
        lambda start: iteration_batches(
            batches, start, options.iterations, options.workers, stage.device.type == "cuda"
        ),
        classification_step(model, stage.device),
        stamp={"classes": list(dataset.classes), "root": str(dataset.root), "split": dataset.split},
        description=f"pre-training {spec.name}",
    )
    save_model(run.pretrain.model, model, kind="pretrain", backbone=spec.name, classes=dataset.classes)
    return stage.finish(inputs=[], trained_on={"objects": len(objects)})
