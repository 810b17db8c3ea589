"""Faster R-CNN training (Ren et al., NIPS 2015, section 3.2): the RPN and Fast R-CNN in one network, on one
process or data-parallel over many (``torchrun``), by either of the paper's schemes.

Approximate joint training (py-faster-rcnn's end2end, the default): each iteration one image's
conv5 feeds the RPN, whose loss is taken on 256 of its anchors, and its proposals (no gradient through their
coordinates) feed Fast R-CNN's head, whose loss is taken on 128 of them with the image's objects added;
the two losses are summed. Fast R-CNN's regression targets are normalised by the fixed standard deviations
(0.1, 0.1, 0.2, 0.2) (py-faster-rcnn's precomputed normalisation), folded into the box layer when the
model is written, so the model file predicts raw deltas as Fast R-CNN's does.

The 4-step alternating training (``ALTERNATING``) takes the same losses one at a time, on two networks
of which the second is kept.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from stages.core.errors import UserError
from stages.core.geometry import encode_boxes
from stages.core.progress import SILENT, Progress
from stages.datasets.records import Dataset
from stages.methods.faster.detector import FasterDetector, ProposalLayer
from stages.methods.faster.minibatches import ImageBatches
from stages.methods.faster.network import NAME, FasterRcnn, save_faster
from stages.methods.faster.options import FasterFinetuneOptions
from stages.methods.faster.rpn import anchor_targets, propose, rpn_loss
from stages.networks.backbones import resolve_backbone
from stages.networks.fast_rcnn import fold_target_normalisation, multitask_loss, pooling_rois
from stages.networks.inputs import read_image
from stages.runs.layout import RunLayout
from stages.runs.processes import Processes, processes
from stages.training.balanced_sampling import BalancedSampler
from stages.training.matching import Matcher, label_boxes
from stages.training.solver import (
    TrainingStage,
    TrainingSummary,
    iteration_batches,
    parameter_groups,
)

TARGET_STDS = (0.1, 0.1, 0.2, 0.2)
"""The fixed scale of Fast R-CNN's regression targets in joint training (py-faster-rcnn's
BBOX_NORMALIZE_STDS; its means are 0)."""


class FasterLoss(nn.Module):
    """One image's training loss: ``forward(image (1, 3, H, W), gt_boxes (G, 4), gt_labels (G,),
    factor (1,), seeds (3,), proposals (P, 4))`` -> (the loss, a tensor of its parts in ``parts`` order).

    With ``rpn``, the RPN's loss on 256 of its anchors; with ``head``, Fast R-CNN's on 128 RoIs with the
    image's objects added. With both (approximate joint training) the RoIs are the network's own
    proposals, with no gradient through their coordinates; with the head alone (the alternating scheme's
    steps 2 and 4) they are the batch's ``proposals``, an earlier step's RPN's. A module, so that
    ``DistributedDataParallel`` can wrap it.
    """

    def __init__(
        self, model: FasterRcnn, options: FasterFinetuneOptions, *, rpn: bool = True, head: bool = True
    ):
        super().__init__()
        self.model, self.options, self.with_rpn, self.with_head = model, options, rpn, head
        self.parts = ("rpn_cls_loss", "rpn_box_loss") * rpn + ("cls_loss", "box_loss", "accuracy") * head
        self.matcher = Matcher(options.foreground_iou, options.background_iou)
        self.sampler = BalancedSampler(options.rois_per_image, options.foreground_fraction, replace=False)

    def forward(
        self,
        image: torch.Tensor,
        gt_boxes: torch.Tensor,
        gt_labels: torch.Tensor,
        factor: torch.Tensor,
        seeds: torch.Tensor,
        proposals: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        model, rpn = self.model, self.options.rpn
        rng = np.random.default_rng(seeds.tolist())
        size = (image.shape[-2], image.shape[-1])
        objects = gt_boxes.cpu().numpy()
        conv5 = model.conv5(image)
        total, parts = torch.zeros((), device=image.device), dict[str, float]()
        if self.with_rpn:
            logits, deltas = model.rpn(conv5)
            anchors = model.anchors(conv5)
            labels, targets = anchor_targets(anchors.cpu().numpy(), objects, size, rpn, rng)
            rpn_total, rpn_parts = rpn_loss(
                logits[0],
                deltas[0],
                torch.as_tensor(labels, device=image.device),
                torch.as_tensor(targets, device=image.device),
                conv5.shape[-2] * conv5.shape[-1],
                rpn.box_weight,
                rpn.box_beta,
            )
            total, parts = total + rpn_total, {**parts, **rpn_parts}
        if self.with_head:
            if self.with_rpn:
                proposals, _ = propose(
                    anchors,
                    logits[0].detach(),
                    deltas[0].detach(),
                    size,
                    pre_nms=rpn.train_pre_nms,
                    post_nms=rpn.train_post_nms,
                    nms_iou=rpn.nms_iou,
                    min_size=rpn.min_size * float(factor),
                )
            head_total, head_parts = self._head_loss(conv5, objects, gt_labels.cpu().numpy(), proposals, rng)
            total, parts = total + head_total, {**parts, **head_parts}
        return total, torch.tensor([parts[name] for name in self.parts])

    def _head_loss(
        self,
        conv5: torch.Tensor,
        objects: np.ndarray,
        classes: np.ndarray,
        proposals: torch.Tensor,
        rng: np.random.Generator,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Fast R-CNN's loss on 128 of the image's objects and ``proposals`` (the scaled image's)."""
        model, device = self.model, conv5.device
        regions = label_boxes(objects, classes, proposals.cpu().numpy(), model.num_classes)
        matched, foreground, background = self.matcher.split(regions.class_iou)
        rows = self.sampler(foreground, background, rng)
        boxes = torch.as_tensor(regions.boxes[rows], device=device)
        labels = torch.as_tensor(matched[rows], device=device)
        goals = torch.as_tensor(regions.target_boxes[rows], device=device)
        normalised = encode_boxes(boxes, goals) / torch.tensor(TARGET_STDS, device=device)
        targets = torch.where(labels[:, None] > 0, normalised, torch.zeros_like(normalised))
        rois = pooling_rois(boxes, torch.zeros(len(rows), device=device), 1.0)
        scores, class_deltas = model.head(model.pool(conv5, rois))
        return multitask_loss(scores, class_deltas, labels, targets, self.options.box_weight)


@dataclass(frozen=True)
class _Step:
    """One training of a network: its losses (``rpn``, ``head``), the parts it trains
    (``FasterRcnn.train_only``) and the folder of its checkpoint and log beside the model (``name``;
    empty: the stage's own)."""

    name: str
    description: str
    rpn: bool
    head: bool
    trains: tuple[str, ...]


JOINT = _Step("", "Faster R-CNN", rpn=True, head=True, trains=("conv", "rpn", "head"))
ALTERNATING = (
    _Step("step1", "step 1 of 4: the RPN", rpn=True, head=False, trains=("conv", "rpn")),
    _Step("step2", "step 2 of 4: Fast R-CNN", rpn=False, head=True, trains=("conv", "head")),
    _Step("step3", "step 3 of 4: the RPN's layers", rpn=True, head=False, trains=("rpn",)),
    _Step("step4", "step 4 of 4: Fast R-CNN's layers", rpn=False, head=True, trains=("head",)),
)
"""The 4-step alternating training (section 3.2): 1, the RPN from the backbone's weights; 2, a second
network from the backbone's weights, Fast R-CNN on step 1's proposals; 3, step 2's network with its conv
frozen, the RPN's layers alone; 4, the same conv still frozen, Fast R-CNN's layers alone on step 3's
proposals. Steps 3 and 4 leave one network whose conv layers both share. Named as
``FasterFinetuneOptions.training_parts`` names their folders."""


def finetune(
    dataset: Dataset,
    run: RunLayout,
    options: FasterFinetuneOptions = FasterFinetuneOptions(),
    resume: bool = True,
    progress: Progress = SILENT,
) -> TrainingSummary:
    """Train Faster R-CNN on the split's images, by approximate joint training or the 4-step alternating
    scheme (``options.scheme``); write the model file. Each step of the alternating scheme runs the
    options' solver, with its own checkpoint and log (``RUN/faster/finetune/stepK/``).

    Under ``torchrun`` each process trains on its own slice of every epoch's images (DDP averages the
    gradients), and only rank 0 writes the checkpoint, log, model and manifest.
    """
    if not dataset.annotated:
        raise UserError(f"{dataset.root}: split {dataset.split!r} has no annotations to train on")
    files = run.method(NAME).finetune
    with processes(options.device) as procs:
        device = procs.device
        stage = TrainingStage(
            "finetune", options, files, method=NAME, resume=resume, progress=progress, procs=procs
        )
        backbone, weights_file = resolve_backbone(run, options.backbone, options.weights)
        stamp = {
            "classes": list(dataset.classes),
            "weights_file": str(weights_file),
            "world_size": procs.world_size,
        }
        where = f"{backbone.spec.name}, {procs.world_size} x {device.type}"

        def network() -> FasterRcnn:
            """A network from the backbone's weights (a copy: the alternating scheme makes two)."""
            rpn = options.rpn
            return FasterRcnn(
                copy.deepcopy(backbone),
                len(dataset.classes),
                rpn.anchor_sizes,
                rpn.anchor_ratios,
                rpn_conv_std=rpn.conv_init_std,
            ).to(device)

        def train(model: FasterRcnn, step: _Step, proposals: list[np.ndarray] | None = None) -> None:
            model.train_only(*step.trains)
            loss = FasterLoss(model, options, rpn=step.rpn, head=step.head)
            runner = stage.parallel(loss)
            batches = ImageBatches(
                dataset.images,
                options,
                proposals=proposals,
                seed=options.seed,
                rank=procs.rank,
                world_size=procs.world_size,
            )

            def run_batch(batch):
                image, *rest = batch
                total, parts = runner(image.to(device, non_blocking=True), *rest)
                return total, dict(zip(loss.parts, parts.tolist(), strict=True))

            stage.train(
                model,
                parameter_groups([(model, 1.0, 2.0)], options.weight_decay),
                lambda start: iteration_batches(
                    batches, start, options.iterations, options.workers, device.type == "cuda", ahead=True
                ),
                run_batch,
                stamp={**stamp, **({"step": step.name} if step.name else {})},
                description=f"training {step.description} ({where})",
                files=files.part(step.name) if step.name else None,
            )

        if options.scheme == "joint":
            model = network()
            train(model, JOINT)
        else:
            first, second, third, fourth = ALTERNATING
            rpn_network = network()
            train(rpn_network, first)
            proposals = _training_proposals(rpn_network, dataset, options, procs, stage.progress)
            del rpn_network  # its proposals are all step 2 reads of it
            model = network()
            train(model, second, proposals)
            train(model, third)
            train(model, fourth, _training_proposals(model, dataset, options, procs, stage.progress))
        digests = stage.agreed_weights(model)
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
        results={
            "backbone": backbone.spec.name,
            "world_size": procs.world_size,
            "rank_weight_digests": digests,
        },
    )


def _training_proposals(
    model: FasterRcnn,
    dataset: Dataset,
    options: FasterFinetuneOptions,
    procs: Processes,
    progress: Progress,
) -> list[np.ndarray]:
    """The RPN's proposals (K, 4) of every training image, on the original image, as the alternating
    scheme's next step reads them (py-faster-rcnn writes them to a file; here they are made again on
    resuming, from the same weights): at the test scale, the training counts before and after NMS. Each
    process proposes its share of the images; every process returns all of them."""
    rpn = options.rpn
    layer = ProposalLayer(rpn.nms_iou, rpn.min_size, rpn.train_pre_nms, rpn.train_post_nms)
    detector = FasterDetector(
        model, options.resolved_test_scale, options.max_size, layer, procs.device, options.precision
    )
    shard = procs.shard(len(dataset.images))
    found = []
    shown = progress if procs.writer else SILENT
    with shown.task("RPN proposals of the training images", len(shard), "img") as advance:
        for index in shard:
            boxes, _ = detector.proposals(*detector.conv5(read_image(dataset.images[index].path)))
            found.append(boxes.cpu().numpy())
            advance(1)
    return [boxes for part in procs.gather(found) for boxes in part]
