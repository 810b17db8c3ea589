"""Every dataset layout behind one function: ``load_dataset`` finds the layout from the root (or takes
``format``), has its reader read the split, and applies what is the same for all of them: warnings for the
repairs, and with ``skip_bad`` images read through so that no stage meets a broken one halfway.

- ``voc``: ``ROOT/ImageSets/Main/<split>.txt`` and ``ROOT/Annotations`` (``stages.datasets.voc``);
- ``coco``: ``ROOT/annotations/instances_<split>.json`` (``stages.datasets.coco``);
- ``yolo``: ``ROOT/data.yaml`` (``stages.datasets.yolo``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.core.errors import UserError
from stages.core.progress import SILENT, Progress
from stages.datasets.coco import read_coco
from stages.datasets.image_files import check_image_file, stored_size
from stages.datasets.options import FORMATS
from stages.datasets.records import Dataset
from stages.datasets.voc import read_voc
from stages.datasets.yolo import DATA_FILE, read_yolo

log = logging.getLogger("rcnn")

Reader = Callable[[Path, str, "tuple[str, ...] | None", bool], Dataset]
READERS: dict[str, Reader] = dict(zip(FORMATS, (read_voc, read_coco, read_yolo), strict=True))


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
    dataset = _read(root, split, classes, skip_bad, progress, format)
    for message in dataset.repairs:
        log.warning(message)
    if dataset.skipped:
        log.warning(
            "skipped %d unreadable images or annotations (--skip-bad): %s",
            len(dataset.skipped),
            "; ".join(list(dataset.skipped.values())[:5]) + (" ..." if len(dataset.skipped) > 5 else ""),
        )
    return dataset


def _read(
    root: Path,
    split: str,
    classes: tuple[str, ...] | None,
    skip_bad: bool,
    progress: Progress,
    format: str | None,
) -> Dataset:
    """``load_dataset`` without its warnings: the repairs and skips are the dataset's to report."""
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
class SplitReport:
    """What `data check` found in one split: per-class object and difficult counts, and every problem."""

    dataset: Dataset
    objects: dict[str, int]
    difficult: dict[str, int]
    empty_images: int
    problems: tuple[str, ...]


@dataclass(frozen=True)
class DatasetCheck:
    """What `data check` found: each split's report, and across the splits (the first being the one to
    train on) the problems that stop a run and the warnings that do not (``class_findings``)."""

    splits: tuple[SplitReport, ...]
    problems: tuple[str, ...]
    warnings: tuple[str, ...]


def check_dataset(
    root: Path,
    splits: Sequence[str],
    classes: tuple[str, ...] | None = None,
    progress: Progress = SILENT,
    format: str | None = None,
) -> DatasetCheck:
    """Read every annotation and decode every image of each split; collect problems, don't stop at them;
    then compare the splits' classes (``class_findings``, the first split as the training one)."""
    reports = tuple(_check_split(root, split, classes, progress, format) for split in dict.fromkeys(splits))
    problems, warnings = class_findings([report.dataset for report in reports])
    return DatasetCheck(reports, tuple(p for report in reports for p in report.problems) + problems, warnings)


def _check_split(
    root: Path, split: str, classes: tuple[str, ...] | None, progress: Progress, format: str | None
) -> SplitReport:
    dataset = _read(root, split, classes, True, progress, format)
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
    return SplitReport(
        dataset,
        {n: int((labels == i + 1).sum()) for i, n in enumerate(names)},
        {n: int(((labels == i + 1) & difficult).sum()) for i, n in enumerate(names)},
        sum(len(r.labels) == 0 for r in dataset.images),
        tuple(problems),
    )


def class_findings(splits: Sequence[Dataset]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(problems, warnings) of the class lists of ``splits``, the first the one trained on. A problem:
    two splits with different class lists (COCO files numbering their categories apart, say), whose
    labels would not mean the same classes. A warning: a class without a (non-difficult) object in the
    first split but with some in another, which no method can learn (its AP is reported apart from the
    mAP)."""
    if not splits:
        return (), ()
    first = splits[0]
    for other in splits[1:]:
        if other.classes != first.classes:
            return (
                f"{first.source or first.root} and {other.source or other.root}: splits {first.split!r} "
                f"and {other.split!r} have different classes ({first.split}: {', '.join(first.classes)}; "
                f"{other.split}: {', '.join(other.classes)}); give one list with --classes",
            ), ()
    trained = first.object_counts()
    others = {other.split: other.object_counts() for other in splits[1:]}
    warnings = []
    for name in first.classes:
        if trained[name] == 0 and any(counts[name] for counts in others.values()):
            counts = ", ".join(f"{c[name]} in {split!r}" for split, c in others.items() if c[name])
            warnings.append(
                f"class {name!r} has no object to train on in split {first.split!r} ({counts}): no method "
                "learns it, and its AP is reported apart from the mAP"
            )
    return (), tuple(warnings)
