"""SPP-net fine-tuning (He et al., ECCV 2014, section 4.1): fc6, fc7 and a new (N + 1)-way layer trained on
the cached pyramids of a split; the conv layers stay as they are."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

from stages.cache.files import FeatureCache
from stages.core.errors import UserError
from stages.core.progress import SILENT, Progress
from stages.datasets.records import Dataset
from stages.methods.spp.network import FINE_TUNED, NAME, SppClassifier, SppNet, load_spp
from stages.methods.spp.options import SppFinetuneOptions
from stages.networks.backbones import Backbone, build_backbone, resolve_backbone
from stages.networks.models import save_model
from stages.runs.layout import RunLayout, describe_input
from stages.training.balanced_sampling import BalancedSampler
from stages.training.matching import Matcher
from stages.training.solver import TrainingStage, TrainingSummary, classification_step, parameter_groups


def _matcher(options: SppFinetuneOptions) -> Matcher:
    return Matcher(options.foreground_iou, options.background_iou)


class _BlockBatches:
    """Mini-batch k comes from block (k // block_iterations) of a seeded block order; rows sampled in it."""

    def __init__(self, cache: FeatureCache, options: SppFinetuneOptions):
        self.cache, self.options = cache, options
        blocks = cache.blocks([], options.block_rows)
        self.blocks = [(int(cache.offsets[i[0]]), int(cache.offsets[i[-1] + 1])) for i, _ in blocks]
        self.sampler = BalancedSampler(options.batch_size, options.foreground_fraction, replace=True)
        self.loaded: tuple[int, dict[str, np.ndarray]] | None = None

    def _block(self, k: int) -> dict[str, np.ndarray]:
        options = self.options
        visit = k // (options.block_iterations or options.block_rows // options.batch_size)
        order = np.random.default_rng([options.seed, visit // len(self.blocks)]).permutation(len(self.blocks))
        index = int(order[visit % len(self.blocks)])
        if self.loaded is None or self.loaded[0] != index:
            start, stop = self.blocks[index]
            h5 = self.cache.h5
            labels, foreground, background = _matcher(options).split(h5["class_iou"][start:stop])
            block = {
                "pyramid": h5["pyramid"][start:stop],
                "labels": labels,
                "foreground": foreground,
                "background": background,
            }
            self.loaded = (index, block)
        return self.loaded[1]

    def __call__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        block = self._block(k)
        rows = self.sampler(
            block["foreground"], block["background"], np.random.default_rng([self.options.seed, k])
        )
        return torch.from_numpy(block["pyramid"][rows].astype(np.float32)), torch.from_numpy(
            block["labels"][rows]
        )

    def batches(self, start: int, stop: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return (self(k) for k in range(start, stop))


def finetune(
    dataset: Dataset,
    run: RunLayout,
    options: SppFinetuneOptions = SppFinetuneOptions(),
    resume: bool = True,
    progress: Progress = SILENT,
) -> TrainingSummary:
    """Fine-tune fc6, fc7 and a new (N + 1)-way layer on the split's cached pyramids (conv layers fixed)."""
    files = run.method(NAME)
    stage = TrainingStage("finetune", options, files.finetune, method=NAME, resume=resume, progress=progress)
    source = files.features(dataset.split)
    if not source.exists():  # the first of the two passes
        command = f"{run.command_for(source, dataset.root)} --before-finetuning"
        raise UserError(f"{source}: not found; cache the pyramids fine-tuning reads with `{command}`")
    with FeatureCache.of(files, dataset.split, dataset.root) as cache:
        if tuple(cache.classes) != tuple(dataset.classes):
            raise UserError(f"{source}: made for classes {', '.join(cache.classes)}, not this dataset's")
        stamp = json.loads(cache.h5.attrs["stamp"])
        net = SppNet(_conv_source(run, stamp["conv"]), stamp["levels"])
        model = SppClassifier(net, len(dataset.classes) + 1).to(stage.device)
        sampler = _BlockBatches(cache, options)
        labels = np.concatenate([_matcher(options)(b["class_iou"]) for _, b in cache.blocks(["class_iou"])])
        stage.train(
            model,
            parameter_groups(
                [(net.fc6, 1.0, 2.0), (net.fc7, 1.0, 2.0), (model.scores, 1.0, 2.0)], options.weight_decay
            ),
            lambda start: sampler.batches(start, options.iterations),
            classification_step(model, stage.device),
            stamp={"cache": describe_input(source)},
            description=f"fine-tuning fc layers ({net.spec.name}, SPP-net)",
        )
    save_model(
        files.finetune.model,
        model,
        kind=NAME,
        backbone=net.spec.name,
        classes=dataset.classes,
        levels=list(net.levels),
        trained_on=stamp,
    )
    return stage.finish(
        inputs=[source],
        dataset=dataset,
        trained_on={"windows": len(labels), "foreground_windows": int((labels > 0).sum())},
        results={"backbone": net.spec.name},
    )


def _conv_source(run: RunLayout, conv: Mapping[str, Any]) -> Backbone:
    """The backbone whose conv layers made a cache: the run's fine-tuned SPP-net's, or the weights named
    (None: the run's pre-trained backbone), as ``extract_features`` stamped it."""
    if conv["weights"] == FINE_TUNED:
        trained = load_spp(run)
        backbone = build_backbone(conv["backbone"])
        backbone.conv.load_state_dict(trained.module.net.conv.state_dict())
        backbone.fc7.load_state_dict(trained.module.net.fc7.state_dict())
        return backbone
    backbone, _ = resolve_backbone(run, conv["backbone"], conv["weights"])
    return backbone
