"""What every dataset reader gives the stages: a split's images with their objects in the toolkit's box
convention (``stages.core.geometry``), and the class list (label i + 1 is ``classes[i]``; 0 is background);
with what the readers share: file-name checks and the repairs of messy boxes, counted."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from stages.core.errors import UserError
from stages.core.geometry import clip_boxes, nonempty


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
    truncated: np.ndarray | None = None
    """(K,) bool: objects partly outside the image (VOC's ``<truncated>``); None where the dataset does not
    mark them (COCO, YOLO)."""
    source_id: int | str | None = None
    """The image's id in its dataset's own files where that is not ``image_id`` (COCO's numbers)."""


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
    format: str = "voc"
    """The layout it was read from: ``voc``, ``coco`` or ``yolo``."""
    source: Path | None = None
    """The file that lists the split (VOC's split file, COCO's JSON, YOLO's data.yaml)."""
    category_ids: tuple[int, ...] = ()
    """The dataset's own id of each class, where it has them (COCO's, possibly sparse); else 1..C."""
    supercategories: tuple[str, ...] = ()
    """The group each class belongs to, where the dataset names them (COCO's ``supercategory``, "" for a
    category without one); else empty."""

    def __len__(self) -> int:
        return len(self.images)

    def object_counts(self) -> dict[str, int]:
        """Class name -> the split's non-difficult objects of it: what training learns from."""
        labels = np.concatenate([np.zeros(0, np.int64), *(r.labels[~r.difficult] for r in self.images)])
        counts = np.bincount(labels, minlength=len(self.classes) + 1)
        return {name: int(counts[label]) for label, name in enumerate(self.classes, start=1)}

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


CLIP_TOLERANCE = 0.01
"""Clipping a box by less than this (pixels) is not reported: YOLO's six decimals of a normalised coordinate
put a box on the image's edge up to a thousandth of a pixel past it."""


@dataclass
class Repairs:
    """Counts of the repairs made while reading a split, reported as one warning each."""

    clipped: int = 0
    dropped: int = 0
    misnamed: int = 0
    unknown_class: Counter = field(default_factory=Counter)
    first_file: dict[str, Path] = field(default_factory=dict)

    def note(self, kind: str, path: Path, n: int = 1) -> None:
        if n:
            setattr(self, kind, getattr(self, kind) + n)
            self.first_file.setdefault(kind, path)

    def fit(
        self, boxes: np.ndarray, labels, difficult, height: int, width: int, path: Path, truncated=None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """(K, 4) toolkit boxes of one image clipped to it, empty ones dropped (both counted against
        ``path``), each object's flags kept with its box: (boxes float32, labels int64, difficult bool,
        truncated bool or None where not given), ``ImageRecord``'s fields in its order."""
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        clipped = clip_boxes(boxes, height, width)
        keep = nonempty(clipped)
        moved = np.abs(clipped[keep] - boxes[keep]).max(axis=1, initial=0) > CLIP_TOLERANCE
        self.note("clipped", path, int(moved.sum()))
        self.note("dropped", path, int((~keep).sum()))
        return (
            clipped[keep],
            np.asarray(labels, dtype=np.int64)[keep],
            np.asarray(difficult, dtype=bool)[keep],
            None if truncated is None else np.asarray(truncated, dtype=bool)[keep],
        )

    def messages(self) -> list[str]:
        found = []
        if self.clipped:
            found.append(
                f"clipped {self.clipped} boxes that reached outside their image "
                f"(first in {self.first_file['clipped']})"
            )
        if self.dropped:
            found.append(
                f"dropped {self.dropped} empty or inverted boxes (first in {self.first_file['dropped']})"
            )
        if self.misnamed:
            found.append(
                f"{self.misnamed} annotations name in <filename> another image than their id's "
                f"(first: {self.first_file['misnamed']}); where the id's image exists, it was read"
            )
        if self.unknown_class:
            names = ", ".join(f"{n} x{c}" for n, c in sorted(self.unknown_class.items()))
            found.append(f"ignored objects of classes outside the class list: {names}")
        return found


def check_relative_path(name: str, where: str) -> str:
    """Return ``name`` if it is a relative path that stays below its folder (``a/b.jpg``, not ``../b``,
    ``/b`` or ``C:b``); else raise UserError."""
    parts = name.replace("\\", "/").split("/")
    if not name or any(part in {"", ".", ".."} for part in parts) or Path(name).is_absolute() or ":" in name:
        raise UserError(f"{where}: file name {name!r} escapes the dataset root")
    return name
