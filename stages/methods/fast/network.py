"""Fast R-CNN's model files (Girshick, ICCV 2015): the network of ``stages.networks.fast_rcnn`` saved with
its classes, backbone, fc ranks and test scale, and loaded back (``rcnn finetune``, ``rcnn compress``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stages.networks.backbones import build_backbone
from stages.networks.fast_rcnn import (
    FastRcnn,
)
from stages.networks.models import TrainedModel, load_model, save_model
from stages.runs.layout import RunLayout

NAME = "fast"


def save_fast(path: Path, model: FastRcnn, classes: Sequence[str], **meta: Any) -> None:
    """A Fast R-CNN model file: weights, backbone, classes, fc ranks and ``meta`` (e.g. test scale)."""
    ranks = list(model.ranks) if model.ranks else None
    save_model(path, model, kind=NAME, backbone=model.spec.name, classes=classes, ranks=ranks, **meta)


def load_fast(path: Path, command: str, classes: Sequence[str] | None = None) -> TrainedModel[FastRcnn]:
    """A Fast R-CNN model file (``command`` makes it); classes checked when given. Its ``meta`` records
    ``ranks`` (None unless compressed) and the test ``scales``, ``max_size`` and ``test_scale``."""
    return load_model(path, NAME, _untrained, command=command, classes=classes)


def load_trained(
    run: RunLayout, compressed: bool = False, classes: Sequence[str] | None = None
) -> TrainedModel[FastRcnn]:
    """The run's trained Fast R-CNN, or its truncated-SVD form (``rcnn compress``)."""
    files = run.method(NAME)
    path = files.compressed if compressed else files.finetune.model
    return load_fast(path, run.command_for(path), classes)


def _untrained(meta: Mapping[str, Any]) -> FastRcnn:
    ranks = (int(meta["ranks"][0]), int(meta["ranks"][1])) if meta.get("ranks") else None
    return FastRcnn(build_backbone(meta["backbone"]), len(meta["classes"]), ranks)
