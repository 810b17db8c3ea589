"""Model files: every trained network the toolkit writes, read back through one function.

A model file is ``torch.save`` of ``{"format", "kind", "backbone", "classes", ...meta, "state_dict"}``,
read with ``weights_only=True`` (no code is unpickled). ``kind`` says which stage made it: ``pretrain``
(``RUN/backbone.pt``) or a method's name (``rcnn``, ``spp``, ``fast``).
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch
from torch import nn

from stages.core.atomic import atomic_path
from stages.core.errors import UserError, first_line
from stages.runs.layout import require_artifact

MODEL_FORMAT = "rcnn-toolkit/model"

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def save_model(
    path: Path, module: nn.Module, *, kind: str, backbone: str, classes: Sequence[str], **meta: Any
) -> None:
    """Write a model file atomically: ``module``'s state dict, what made it and JSON-able ``meta``."""
    content = {
        "format": MODEL_FORMAT,
        "kind": kind,
        "backbone": backbone,
        "classes": list(classes),
        **meta,
        "state_dict": module.state_dict(),
    }
    with atomic_path(path) as tmp:
        torch.save(content, tmp)


def read_weights(path: Path, hint: str = "") -> Any:
    """Whatever ``path`` holds, loaded with ``weights_only`` (tensors, containers, plain values);
    UserError naming the file, in one line ending in ``hint``, if it is missing, damaged or holds
    anything else."""
    path = Path(path)
    end = f"; {hint}" if hint else ""
    if not path.is_file():
        raise UserError(f"{path}: file not found{end}")
    with open(path, "rb") as file:
        head = file.read(4)
    archive = head == b"PK\x03\x04"  # torch.save's zip archive; its legacy format is a pickle (0x80)
    if not archive and not head.startswith(b"\x80"):
        raise UserError(
            f"{path}: not a PyTorch weights file (neither torch.save's archive nor a pickle){end}"
        )
    if archive and not zipfile.is_zipfile(path):
        raise UserError(f"{path}: truncated or damaged (an incomplete torch.save archive){end}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about foreign pickles before refusing them
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UserError(
            f"{path}: holds Python objects besides tensors; refused, as loading them could run code{end}"
        ) from None
    except Exception as exc:  # torch raises several types for files it cannot read
        raise UserError(f"{path}: damaged weights file ({first_line(exc)}){end}") from None


def is_model_file(content: Any) -> bool:
    """Whether loaded ``content`` is a model file this toolkit wrote."""
    return isinstance(content, dict) and content.get("format") == MODEL_FORMAT


@dataclass(frozen=True)
class TrainedModel(Generic[ModuleT]):
    """A network read from a model file: the module with its weights, the file, and what the file
    records beside them (``meta``: kind, backbone, classes and the stage's own, such as the test scale)."""

    module: ModuleT
    path: Path
    meta: Mapping[str, Any]

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.meta["classes"])

    @property
    def backbone(self) -> str:
        return str(self.meta["backbone"])


def load_model(
    path: Path,
    kind: str,
    build: Callable[[Mapping[str, Any]], ModuleT],
    *,
    command: str,
    classes: Sequence[str] | None = None,
) -> TrainedModel[ModuleT]:
    """Read the ``kind`` model file at ``path``: ``build(meta)`` makes the module its weights load into.

    UserError naming the file when it is missing (with ``command``, which makes it), not a model file of
    ``kind``, or (with ``classes``) trained on other classes.
    """
    require_artifact(path, command)
    content = read_weights(path)
    if not is_model_file(content):
        raise UserError(f"{path}: not a model file written by rcnn")
    meta = {k: v for k, v in content.items() if k != "state_dict"}
    if meta.get("kind") != kind:
        raise UserError(
            f"{path}: a {meta.get('kind')!r} model file, not {kind!r}; remake it with `{command}`"
        )
    if classes is not None and tuple(meta["classes"]) != tuple(classes):
        raise UserError(
            f"{path}: trained on classes {', '.join(meta['classes'])}, not this dataset's "
            f"{', '.join(classes)}; train again or pass --classes"
        )
    module = build(meta)
    try:
        module.load_state_dict(content["state_dict"])
    except (KeyError, RuntimeError) as exc:
        raise UserError(f"{path}: weights that do not fit its network ({first_line(exc)})") from None
    return TrainedModel(module, Path(path), meta)
