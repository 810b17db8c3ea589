"""Supervised pre-training (R-CNN section 2.3), as classification of ground-truth object crops.

The papers pre-train on ImageNet classification. For users without ImageNet weights, and for the demo, this
stage trains the backbone to classify the warped, jittered, mirrored object crops of a split: an N-way
classifier on fc7, discarded afterwards. Writes the run's ``backbone.pt``.

A split whose objects are all of one class would make a one-way classifier, which reaches loss 0 at once
and learns nothing. There the crops are told from background crops instead: windows of the objects' sizes
that overlap no object by IoU ``BACKGROUND_IOU`` or more, as many as there are objects, half of each
mini-batch. That is the detector's own question (object or not), asked of the split's own images.
"""

from __future__ import annotations

import logging

import numpy as np

from stages.core.errors import UserError
from stages.core.geometry import box_iou
from stages.core.progress import SILENT, Progress
from stages.datasets.records import Dataset
from stages.networks.backbones import Classifier, build_backbone, get_spec
from stages.networks.models import save_model
from stages.runs.layout import RunLayout
from stages.training.balanced_sampling import BalancedSampler
from stages.training.options import PretrainOptions
from stages.training.solver import (
    TrainingStage,
    TrainingSummary,
    classification_step,
    iteration_batches,
    parameter_groups,
)
from stages.training.windows import WindowBatches

log = logging.getLogger("rcnn")


BACKGROUND_IOU = 0.3
"""Background crops overlap every object by less than this: R-CNN's threshold for its SVMs' negatives
(section 2.3)."""


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
    image_index = np.array([o[0] for o in objects])
    boxes = np.stack([o[1] for o in objects]).astype(np.float32)
    labels = np.array([o[2] - 1 for o in objects])
    outputs, background = len(dataset.classes), np.zeros(0, np.int64)
    if len(np.unique(labels)) == 1:
        name = dataset.classes[labels[0]]
        found_index, found_boxes = background_crops(dataset, boxes, options.seed)
        if not len(found_boxes):
            raise UserError(
                f"{dataset.root}: split {dataset.split!r} has objects of one class ({name}) and no window "
                f"free of them to tell them from; pre-train on other data, or pass --weights imagenet"
            )
        log.info(
            "pre-training tells the one class of split %r (%s) from %d background crops: a one-way "
            "classifier would learn nothing",
            dataset.split,
            name,
            len(found_boxes),
        )
        background = np.arange(len(boxes), len(boxes) + len(found_boxes))
        image_index = np.concatenate([image_index, found_index])
        boxes = np.concatenate([boxes, found_boxes])
        labels = np.concatenate([labels, np.full(len(found_boxes), outputs)])
        outputs += 1
    stage = TrainingStage("pretrain", options, run.pretrain, resume=resume, progress=progress)
    model = Classifier(build_backbone(spec.name, options.weights), outputs).to(stage.device)
    batches = WindowBatches(
        [r.path for r in dataset.images],
        image_index,
        boxes,
        labels,
        np.arange(len(objects)),
        background,
        BalancedSampler(options.batch_size, 0.5 if len(background) else 1.0, replace=True),
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
        stamp={
            "classes": list(dataset.classes),
            "root": str(dataset.root),
            "split": dataset.split,
            **({"background_crops": len(background)} if len(background) else {}),
        },
        description=f"pre-training {spec.name}",
    )
    save_model(run.pretrain.model, model, kind="pretrain", backbone=spec.name, classes=dataset.classes)
    counts = {"objects": len(objects), **({"background_crops": len(background)} if len(background) else {})}
    return stage.finish(inputs=[], trained_on=counts, dataset=dataset)


def background_crops(dataset: Dataset, objects: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(image index (B,), boxes (B, 4)): for each image of ``dataset``, as many windows as it has
    (non-difficult) objects, each the size of one of the split's ``objects`` (K, 4) drawn at random and
    placed at random, keeping those that overlap every object of the image by IoU below
    ``BACKGROUND_IOU`` (up to 20 tries a window; a crowded image may give fewer). Seeded by ``seed``."""
    rng = np.random.default_rng([seed, 1])
    sizes = objects[:, 2:] - objects[:, :2]
    found_index, found_boxes = [], []
    for index, record in enumerate(dataset.images):
        wanted = int((~record.difficult).sum())
        if not wanted:
            continue
        tries = 20 * wanted
        size = sizes[rng.integers(0, len(sizes), tries)]
        size = np.minimum(size, [record.width, record.height])
        corner = rng.random((tries, 2)) * ([record.width, record.height] - size)
        candidates = np.concatenate([corner, corner + size], axis=1).astype(np.float32)
        free = box_iou(candidates, record.boxes).max(axis=1, initial=0.0) < BACKGROUND_IOU
        chosen = candidates[free][:wanted]
        found_index += [index] * len(chosen)
        found_boxes.append(chosen)
    return np.array(found_index, np.int64), np.concatenate([np.zeros((0, 4), np.float32), *found_boxes])
