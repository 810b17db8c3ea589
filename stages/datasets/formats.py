"""Every dataset layout behind one function: ``load_dataset`` finds the layout from the root (or takes
``format``), has its reader read the split, and applies what is the same for all of them: warnings for the
repairs, and with ``skip_bad`` images read through so that no stage meets a broken one halfway.

- ``voc``: ``ROOT/ImageSets/Main/<split>.txt`` and ``ROOT/Annotations`` (``stages.datasets.voc``);
- ``coco``: ``ROOT/annotations/instances_<split>.json`` (``stages.datasets.coco``);
- ``yolo``: ``ROOT/data.yaml`` (``stages.datasets.yolo``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.datasets.coco import read_coco
from stages.datasets.records import Dataset
from stages.datasets.voc import read_voc
from stages.datasets.yolo import DATA_FILE, read_yolo
from stages.errors import UserError
from stages.image_files import check_image_file, stored_size
from stages.progress import SILENT, Progress

log = logging.getLogger("rcnn")

Reader = Callable[[Path, str, "tuple[str, ...] | None", bool], Dataset]
READERS: dict[str, Reader] = {"voc": read_voc, "coco": read_coco, "yolo": read_yolo}
FORMATS = tuple(READERS)


def detect_format(root: Path) -> str:
    """The layout of the dataset at ``root``: yolo with a data.yaml, coco with annotations/instances_*.json,
    voc with ImageSets/, Annotations/ or JPEGImages/."""
    root = Path(root)
    if (root / DATA_FILE).is_file():
        return "yolo"
    if any((root / "annotations").glob("instances_*.json")):
        return "coco"
    if any((root / name).is_dir() for name in ("ImageSets", "Annotations", "JPEGImages")):
        return "voc"
    raise UserError(
        f"{root}: not a dataset this toolkit reads (no {DATA_FILE}, annotations/instances_<split>.json, "
        "or VOC's ImageSets/Main); pass --format voc|coco|yolo"
    )


def load_dataset(
    root: Path,
    split: str,
    classes: tuple[str, ...] | None = None,
    skip_bad: bool = False,
    progress: Progress = SILENT,
    format: str | None = None,
) -> Dataset:
    """Read split ``split`` of the dataset at ``root`` in its layout (``format``, default: found).

    ``classes`` restricts the class list (objects of others are counted and left out). Unreadable
    annotations raise UserError naming the file; with ``skip_bad`` they are skipped and listed instead,
    and so is every image that does not decode to the end (each is read through here, about a millisecond
    a VOC image, so that no stage meets a broken one halfway).
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: dataset root not found")
    if format is not None and format not in READERS:
        raise UserError(f"--format {format}: not one of {', '.join(FORMATS)}")
    dataset = READERS[format or detect_format(root)](
        root, split, tuple(classes) if classes else None, skip_bad
    )
    if skip_bad:
        dataset = _without_unreadable_images(dataset, progress)
    for message in dataset.repairs:
        log.warning(message)
    if dataset.skipped:
        log.warning(
            "skipped %d unreadable images or annotations (--skip-bad): %s",
            len(dataset.skipped),
            "; ".join(list(dataset.skipped.values())[:5]) + (" ..." if len(dataset.skipped) > 5 else ""),
        )
    if not dataset.images:
        raise UserError(f"{dataset.source or root}: no readable images in split {split!r}")
    return dataset


def _without_unreadable_images(dataset: Dataset, progress: Progress) -> Dataset:
    unreadable = {}
    with progress.task("checking images", len(dataset), "img") as advance:
        for record in dataset.images:
            try:
                check_image_file(record.path)
            except UserError as exc:
                unreadable[record.image_id] = str(exc)
            advance()
    return dataset.without(unreadable) if unreadable else dataset


@dataclass(frozen=True)
class DatasetReport:
    """What `data check` found: per-class object and difficult counts, and every problem."""

    dataset: Dataset
    objects: dict[str, int]
    difficult: dict[str, int]
    empty_images: int
    problems: tuple[str, ...]


def check_dataset(
    root: Path,
    split: str,
    classes: tuple[str, ...] | None = None,
    progress: Progress = SILENT,
    format: str | None = None,
) -> DatasetReport:
    """Read every annotation and decode every image of the split; collect problems, don't stop at them."""
    dataset = load_dataset(root, split, classes, skip_bad=True, progress=progress, format=format)
    problems = [*dataset.skipped.values(), *dataset.repairs]
    for record in dataset.images:
        height, width = stored_size(record.path)
        if (height, width) != (record.height, record.width):
            problems.append(
                f"{record.path}: image is {width}x{height}, annotation says {record.width}x{record.height}"
            )
    labels = np.concatenate([r.labels for r in dataset.images])
    difficult = np.concatenate([r.difficult for r in dataset.images])
    names = dataset.classes
    return DatasetReport(
        dataset,
        {n: int((labels == i + 1).sum()) for i, n in enumerate(names)},
        {n: int(((labels == i + 1) & difficult).sum()) for i, n in enumerate(names)},
        sum(len(r.labels) == 0 for r in dataset.images),
        tuple(problems),
    )
