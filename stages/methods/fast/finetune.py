"""Fast R-CNN fine-tuning (Girshick, ICCV 2015, sections 2.3 and 4): the whole network end to end with the
multi-task loss, on one process or data-parallel over many (``torchrun``).

Hierarchical mini-batches (``sampling``), SGD at 0.001 with biases at 2x, x0.1 after 30k of 40k
iterations, momentum 0.9, weight decay 0.0005, the layers before ``trainable_from`` (default: the backbone's
``fast_rcnn_trainable_from``, section 4.5) frozen;
writes ``RUN/fast/finetune/model.pt`` with the box layer predicting raw deltas (the target normalisation
folded in).
"""

from __future__ import annotations

import torch

from stages.core.errors import UserError
from stages.core.progress import SILENT, Progress
from stages.datasets.records import Dataset
from stages.methods.fast.minibatches import ImageBatches, target_statistics
from stages.methods.fast.network import NAME, save_fast
from stages.methods.fast.options import FastFinetuneOptions
from stages.networks.backbones import resolve_backbone
from stages.networks.fast_rcnn import (
    FastRcnn,
    checked_trainable_from,
    fold_target_normalisation,
    multitask_loss,
)
from stages.proposals.propose import load_proposals
from stages.runs.layout import RunLayout
from stages.runs.processes import processes
from stages.training.matching import label_split
from stages.training.solver import (
    BatchLoss,
    TrainingStage,
    TrainingSummary,
    iteration_batches,
    parameter_groups,
)


def finetune(
    dataset: Dataset,
    run: RunLayout,
    options: FastFinetuneOptions = FastFinetuneOptions(),
    resume: bool = True,
    progress: Progress = SILENT,
) -> TrainingSummary:
    """Train Fast R-CNN end to end on the split's images and proposals; write the model file.

    Under ``torchrun`` each process trains on its own slice of every epoch's images (DDP averages the
    gradients), and only rank 0 writes the checkpoint, log, model and manifest.
    """
    if not dataset.annotated:
        raise UserError(f"{dataset.root}: split {dataset.split!r} has no annotations to train on")
    files = run.method(NAME).finetune
    with processes(options.device) as procs:
        rank, world_size, device = procs.rank, procs.world_size, procs.device
        stage = TrainingStage(
            "finetune", options, files, method=NAME, resume=resume, progress=progress, procs=procs
        )
        backbone, weights_file = resolve_backbone(run, options.backbone, options.weights)
        checked_trainable_from(backbone.spec, options.trainable_from)  # before any data is read
        dataset, proposals = load_proposals(run, dataset)
        regions = label_split(dataset, proposals)
        means, stds = target_statistics(regions, len(dataset.classes), options.sampling)
        batches = ImageBatches(
            [r.path for r in dataset.images],
            [(r.height, r.width) for r in dataset.images],
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
        model.freeze_early_layers(options.trainable_from)
        runner = stage.parallel(model)
        stage.train(
            model,
            parameter_groups([(model, 1.0, 2.0)], options.weight_decay),
            lambda start: iteration_batches(
                batches, start, options.iterations, options.workers, device.type == "cuda", ahead=True
            ),
            _multitask_step(runner, device, options.box_weight),
            stamp={
                "classes": list(dataset.classes),
                "weights_file": str(weights_file),
                "world_size": world_size,
            },
            description=f"training Fast R-CNN ({backbone.spec.name}, {world_size} x {device.type})",
        )
        digests = stage.agreed_weights(model)
        if stage.writer:
            fold_target_normalisation(model, means, stds)
            save_fast(
                files.model,
                model,
                dataset.classes,
                scales=list(options.sampling.scales),
                max_size=options.sampling.max_size,
                test_scale=options.resolved_test_scale,
            )
    return stage.finish(
        inputs=[run.proposals(dataset.split), *([weights_file] if weights_file else [])],
        dataset=dataset,
        trained_on={
            "images": len(batches.usable),
            "foreground_rois": sum(len(foreground) for _, foreground, _ in batches.rows),
        },
        results={"backbone": backbone.spec.name, "world_size": world_size, "rank_weight_digests": digests},
    )


def _multitask_step(runner: torch.nn.Module, device: torch.device, box_weight: float) -> BatchLoss:
    def step(batch):
        images, rois, labels, targets = (t.to(device, non_blocking=True) for t in batch)
        scores, deltas = runner(images, rois)
        return multitask_loss(scores, deltas, labels, targets, box_weight)

    return step
