"""Faster R-CNN training (Ren et al., NIPS 2015, section 3.2): the RPN and Fast R-CNN in one network, on one
process or data-parallel over many (``torchrun``).

Approximate joint training (py-faster-rcnn's end2end): each iteration one image's
conv5 feeds the RPN, whose loss is taken on 256 of its anchors, and its proposals (no gradient through their
coordinates) feed Fast R-CNN's head, whose loss is taken on 128 of them with the image's objects added;
the two losses are summed. Fast R-CNN's regression targets are normalised by the fixed standard deviations
(0.1, 0.1, 0.2, 0.2) (py-faster-rcnn's precomputed normalisation), folded into the box layer when the
model is written, so the model file predicts raw deltas as Fast R-CNN's does.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from stages.core.errors import UserError
from stages.core.geometry import encode_boxes
from stages.core.progress import SILENT, Progress
from stages.datasets.records import Dataset
from stages.methods.faster.minibatches import ImageBatches
from stages.methods.faster.network import NAME, FasterRcnn, save_faster
from stages.methods.faster.options import FasterFinetuneOptions
from stages.methods.faster.rpn import anchor_targets, rpn_loss
from stages.networks.backbones import resolve_backbone
from stages.networks.fast_rcnn import fold_target_normalisation, multitask_loss, pooling_rois
from stages.runs.layout import RunLayout
from stages.runs.processes import processes
from stages.training.balanced_sampling import BalancedSampler
from stages.training.matching import Matcher, label_boxes
from stages.training.solver import (
    TrainingStage,
    TrainingSummary,
    iteration_batches,
    parameter_groups,
    weight_digest,
)

TARGET_STDS = (0.1, 0.1, 0.2, 0.2)
"""The fixed scale of Fast R-CNN's regression targets in joint training (py-faster-rcnn's
BBOX_NORMALIZE_STDS; its means are 0)."""


class JointLoss(nn.Module):
    """Approximate joint training's loss of one image: ``forward(image (1, 3, H, W), gt_boxes (G, 4),
    gt_labels (G,), factor (1,), seeds (3,))`` -> (the RPN's loss + Fast R-CNN's, a stacked tensor of
    their parts in ``PARTS`` order). A module, so that ``DistributedDataParallel`` can wrap it."""

    PARTS = ("rpn_cls_loss", "rpn_box_loss", "cls_loss", "box_loss", "accuracy")

    def __init__(self, model: FasterRcnn, options: FasterFinetuneOptions):
        super().__init__()
        self.model, self.options = model, options
        self.matcher = Matcher(options.foreground_iou, options.background_iou)
        self.sampler = BalancedSampler(options.rois_per_image, options.foreground_fraction, replace=False)

    def forward(
        self,
        image: torch.Tensor,
        gt_boxes: torch.Tensor,
        gt_labels: torch.Tensor,
        factor: torch.Tensor,
        seeds: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        model, options, rpn = self.model, self.options, self.options.rpn
        device = image.device
        rng = np.random.default_rng(seeds.tolist())
        size = (image.shape[-2], image.shape[-1])
        objects, classes = gt_boxes.cpu().numpy(), gt_labels.cpu().numpy()
        conv5 = model.conv5(image)
        logits, deltas = model.rpn(conv5)
        anchors = model.anchors(conv5)
        labels, targets = anchor_targets(anchors.cpu().numpy(), objects, size, rpn, rng)
        rpn_total, rpn_parts = rpn_loss(
            logits[0],
            deltas[0],
            torch.as_tensor(labels, device=device),
            torch.as_tensor(targets, device=device),
            conv5.shape[-2] * conv5.shape[-1],
            rpn.box_weight,
            rpn.box_beta,
        )
        with torch.no_grad():
            proposals, _ = model.proposals(
                conv5.detach(),
                size,
                pre_nms=rpn.train_pre_nms,
                post_nms=rpn.train_post_nms,
                nms_iou=rpn.nms_iou,
                min_size=rpn.min_size * float(factor),
            )
        regions = label_boxes(objects, classes, proposals.cpu().numpy(), model.num_classes)
        matched, foreground, background = self.matcher.split(regions.class_iou)
        rows = self.sampler(foreground, background, rng)
        boxes = torch.as_tensor(regions.boxes[rows], device=device)
        row_labels = torch.as_tensor(matched[rows], device=device)
        goals = torch.as_tensor(regions.target_boxes[rows], device=device)
        normalised = encode_boxes(boxes, goals) / torch.tensor(TARGET_STDS, device=device)
        targets_t = torch.where(row_labels[:, None] > 0, normalised, torch.zeros_like(normalised))
        rois = pooling_rois(boxes, torch.zeros(len(rows), device=device), 1.0)
        scores, class_deltas = model.head(model.pool(conv5, rois))
        fast_total, fast_parts = multitask_loss(
            scores, class_deltas, row_labels, targets_t, options.box_weight
        )
        parts = {**rpn_parts, **fast_parts}
        return rpn_total + fast_total, torch.tensor([parts[name] for name in self.PARTS])


def finetune(
    dataset: Dataset,
    run: RunLayout,
    options: FasterFinetuneOptions = FasterFinetuneOptions(),
    resume: bool = True,
    progress: Progress = SILENT,
) -> TrainingSummary:
    """Train Faster R-CNN on the split's images; write the model file.

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
        batches = ImageBatches(dataset.images, options, seed=options.seed, rank=rank, world_size=world_size)
        model = FasterRcnn(
            backbone, len(dataset.classes), options.rpn.anchor_sizes, options.rpn.anchor_ratios
        )
        model = model.to(device)
        model.freeze_early_layers()
        runner: nn.Module = JointLoss(model, options)
        if world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            runner = DistributedDataParallel(runner, device_ids=[device] if device.type == "cuda" else None)
        torch.manual_seed(options.seed + rank)  # each process its own dropout masks

        def step(batch):
            image, *rest = batch
            loss, parts = runner(image.to(device, non_blocking=True), *rest)
            return loss, dict(zip(JointLoss.PARTS, parts.tolist(), strict=True))

        stage.train(
            model,
            parameter_groups([(model, 1.0, 2.0)], options.weight_decay),
            lambda start: iteration_batches(
                batches, start, options.iterations, options.workers, device.type == "cuda", ahead=True
            ),
            step,
            stamp={
                "classes": list(dataset.classes),
                "weights_file": str(weights_file),
                "world_size": world_size,
            },
            description=f"training Faster R-CNN ({backbone.spec.name}, {world_size} x {device.type})",
        )
        digests = procs.gather(weight_digest(model))
        if len(set(digests)) != 1:
            raise RuntimeError(f"data-parallel ranks ended with different weights: {digests}")
        if stage.writer:
            classes = len(dataset.classes) + 1
            fold_target_normalisation(model, np.zeros((classes, 4)), np.tile(TARGET_STDS, (classes, 1)))
            save_faster(
                files.model,
                model,
                dataset.classes,
                scales=list(options.scales),
                max_size=options.max_size,
                test_scale=options.resolved_test_scale,
                rpn={
                    k: getattr(options.rpn, k)
                    for k in ("nms_iou", "min_size", "test_pre_nms", "test_post_nms")
                },
            )
    return stage.finish(
        inputs=[*([weights_file] if weights_file else [])],
        dataset=dataset,
        trained_on={
            "images": len(dataset.images),
            "objects": int(sum((~r.difficult).sum() for r in dataset.images)),
        },
        results={"backbone": backbone.spec.name, "world_size": world_size, "rank_weight_digests": digests},
    )
