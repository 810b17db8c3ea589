"""R-CNN fine-tuning (Girshick et al., CVPR 2014, section 2.3): the whole network as an (N + 1)-way
classifier of warped proposals."""

from __future__ import annotations

import numpy as np

from stages.core.errors import UserError
from stages.core.progress import SILENT, Progress
from stages.datasets.records import Dataset
from stages.methods.rcnn.options import FinetuneOptions
from stages.networks.backbones import Classifier, resolve_backbone
from stages.networks.models import save_model
from stages.proposals.propose import load_proposals
from stages.runs.layout import RunLayout
from stages.training.balanced_sampling import BalancedSampler
from stages.training.matching import Matcher, label_split
from stages.training.solver import (
    TrainingStage,
    TrainingSummary,
    classification_step,
    iteration_batches,
    parameter_groups,
)
from stages.training.windows import WindowBatches

NAME = "rcnn"


def finetune(
    dataset: Dataset,
    run: RunLayout,
    options: FinetuneOptions = FinetuneOptions(),
    resume: bool = True,
    progress: Progress = SILENT,
) -> TrainingSummary:
    """Fine-tune the backbone as an (N + 1)-way classifier of warped proposals; write the model file."""
    if not dataset.annotated:
        raise UserError(f"{dataset.root}: split {dataset.split!r} has no annotations to fine-tune on")
    files = run.method(NAME).finetune
    stage = TrainingStage("finetune", options, files, method=NAME, resume=resume, progress=progress)
    backbone, weights_file = resolve_backbone(run, options.backbone, options.weights)
    spec = backbone.spec
    dataset, proposals = load_proposals(run, dataset)
    regions = label_split(dataset, proposals)
    matcher = Matcher(options.foreground_iou, (0.0, options.foreground_iou))
    labels, foreground, background = matcher.split(np.concatenate([r.class_iou for r in regions]))
    if len(foreground) == 0 or len(background) == 0:
        raise UserError(
            f"{dataset.root}: split {dataset.split!r} gives no foreground or no background windows"
        )
    batches = WindowBatches(
        [r.path for r in dataset.images],
        np.repeat(np.arange(len(regions)), [len(r.boxes) for r in regions]),
        np.concatenate([r.boxes for r in regions]),
        labels,
        foreground,
        background,
        BalancedSampler(options.batch_size, options.foreground_fraction, replace=True),
        spec.input_size,
        spec.context_padding,
        mirror=options.mirror,
        seed=options.seed,
    )
    model = Classifier(backbone, len(dataset.classes) + 1).to(stage.device)
    stage.train(
        model,
        parameter_groups([(model.backbone, 1.0, 2.0), (model.scores, 10.0, 20.0)], options.weight_decay),
        lambda start: iteration_batches(
            batches, start, options.iterations, options.workers, stage.device.type == "cuda"
        ),
        classification_step(model, stage.device),
        stamp={"classes": list(dataset.classes), "weights_file": str(weights_file)},
        description=f"fine-tuning {spec.name} (R-CNN)",
    )
    save_model(files.model, model, kind=NAME, backbone=spec.name, classes=dataset.classes)
    return stage.finish(
        inputs=[run.proposals(dataset.split), *([weights_file] if weights_file else [])],
        dataset=dataset,
        trained_on={"windows": len(labels), "foreground_windows": len(foreground)},
        results={"backbone": spec.name},
    )
