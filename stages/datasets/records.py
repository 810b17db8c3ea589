"""What every dataset reader gives the stages: a split's images with their objects in the toolkit's box
convention (``stages.geometry``), and the class list (label i + 1 is ``classes[i]``; 0 is background)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from stages.errors import UserError


@dataclass(frozen=True)
class ImageRecord:
    """One image of a split and its objects.

    boxes: (K, 4) float32 toolkit boxes; labels: (K,) int64 in 1..C (0 is background);
    difficult: (K,) bool.
    """

    image_id: str
    path: Path
    height: int
    width: int
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray


@dataclass(frozen=True)
class Dataset:
    """The images of one split, the class names (index i + 1 is label i + 1) and what was skipped."""

    root: Path
    split: str
    classes: tuple[str, ...]
    images: tuple[ImageRecord, ...]
    annotated: bool
    skipped: Mapping[str, str] = field(default_factory=dict)
    """Images left out as unreadable (``--skip-bad``): image id -> the problem, naming the file."""
    repairs: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.images)

    def without(self, problems: Mapping[str, str]) -> Dataset:
        """This split less the images ``problems`` names (image id -> why), listed among the skipped."""
        return replace(
            self,
            images=tuple(r for r in self.images if r.image_id not in problems),
            skipped={**self.skipped, **problems},
        )


def check_plain_name(name: str, where: str) -> str:
    """Return ``name`` if it is a plain file name that cannot leave its folder; else raise UserError."""
    if (
        not name
        or name in {".", ".."}
        or any(c in name for c in "/\\\0")
        or Path(name).is_absolute()
        or ":" in name
    ):
        raise UserError(f"{where}: image id or file name {name!r} escapes the dataset root")
    return name
