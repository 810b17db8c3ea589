"""The YOLO layout (Ultralytics): ``ROOT/data.yaml`` naming the classes and each split's image folder,
``images/<split>/*.jpg`` and ``labels/<split>/*.txt`` beside them, one ``class cx cy w h`` row an object,
normalised to [0, 1] by the image's width and height. An image without a label file has no objects;
difficult objects, which YOLO cannot mark, live in a file beside it (``DIFFICULT_SUFFIX``).

Rows become toolkit boxes here: ``x1 = (cx - w / 2) W`` and so on, in continuous pixels.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from stages.core.errors import UserError, first_line
from stages.datasets.image_files import is_image_name, stored_size
from stages.datasets.records import Dataset, ImageRecord, Repairs, check_plain_name, check_relative_path

log = logging.getLogger("rcnn")

DATA_FILE = "data.yaml"
DIFFICULT_SUFFIX = ".difficult.txt"
"""YOLO has no difficult flag: this toolkit keeps difficult objects in ``labels/<split>/<stem>.difficult.txt``
beside the label file. Ultralytics does not read it, so it trains without them, as its own VOC conversion
does; this toolkit reads them back as difficult (out of training, ignored by evaluation)."""


def read_data_file(root: Path) -> dict[str, Any]:
    """``ROOT/data.yaml``, checked to name its classes."""
    path = Path(root) / DATA_FILE
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: not found") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0]
        raise UserError(f"{path}: not a YAML file ({first})") from None
    if not isinstance(content, dict) or not isinstance(content.get("names"), (list, dict)):
        raise UserError(f"{path}: no list of class names (names:)")
    return content


def class_names(content: dict[str, Any], path: Path) -> tuple[str, ...]:
    """data.yaml's ``names``: a list, or a mapping from 0, 1, ... to names."""
    names = content["names"]
    if isinstance(names, dict):
        try:
            numbered = {int(k): v for k, v in names.items()}
        except ValueError:
            numbered = {}
        if sorted(numbered) != list(range(len(names))):
            raise UserError(f"{path}: names: must be numbered 0, 1, ... without gaps")
        names = [numbered[i] for i in range(len(names))]
    return tuple(str(n) for n in names)


def dataset_folder(root: Path, content: dict[str, Any]) -> Path:
    """The folder data.yaml's split entries are relative to: its ``path:`` (absolute, or relative to
    ROOT, the data.yaml's folder) where that is a folder, else ROOT. (Ultralytics reads a relative
    ``path:`` from its own datasets folder, which the toolkit does not know, hence ROOT then.)"""
    entry = content.get("path")
    if entry is None or entry == "":
        return Path(root)
    if not isinstance(entry, str):
        raise UserError(f"{Path(root) / DATA_FILE}: path: must be a folder")
    folder = Path(root) / Path(entry).expanduser()  # an absolute path replaces ROOT
    if folder.is_dir():
        return folder
    log.warning(
        "%s: path: %s is not a folder; reading the splits from %s", Path(root) / DATA_FILE, entry, root
    )
    return Path(root)


def split_folders(root: Path, split: str, content: dict[str, Any]) -> tuple[Path, Path]:
    """(images folder, labels folder) of ``split``: data.yaml's entry for it, relative to its ``path:``
    (``dataset_folder``), else ``images/<split>``; the labels where Ultralytics looks for them,
    ``images`` replaced by ``labels``."""
    check_plain_name(split, "--split")
    data_file = Path(root) / DATA_FILE
    base = dataset_folder(root, content)
    entry = content.get(split, f"images/{split}")
    if not isinstance(entry, str):
        raise UserError(f"{data_file}: {split}: must be one folder")
    images = base / check_relative_path(entry.removeprefix("./"), f"{data_file}: {split}")
    parts = list(Path(entry.removeprefix("./")).parts)
    labels = base.joinpath(*["labels" if part == "images" else part for part in parts])
    if not images.is_dir():
        raise UserError(f"{images}: image folder of split {split!r} not found")
    return images, labels


def read_yolo(root: Path, split: str, classes: tuple[str, ...] | None, skip_bad: bool) -> Dataset:
    """Read the split's images and label files; ``classes`` restricts data.yaml's names."""
    content = read_data_file(root)
    data_file = Path(root) / DATA_FILE
    names = class_names(content, data_file)
    chosen = tuple(classes) if classes else names
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        raise UserError(f"{data_file}: no class named {', '.join(unknown)}")
    label_of = {names.index(name): label for label, name in enumerate(chosen, start=1)}
    image_folder, label_folder = split_folders(root, split, content)
    paths = sorted(p for p in image_folder.iterdir() if is_image_name(p))
    if not paths:
        raise UserError(f"{image_folder}: no images (.jpg, .png, ...) in split {split!r}")
    stems = [p.stem for p in paths]
    if len(set(stems)) != len(stems):
        raise UserError(
            f"{image_folder}: two images share a file name stem; the toolkit names images by them"
        )
    repairs, images, skipped = Repairs(), [], {}
    for path in paths:
        try:
            images.append(_record(path, label_folder / f"{path.stem}.txt", names, label_of, repairs))
        except UserError as exc:
            if not skip_bad:
                raise
            skipped[path.stem] = str(exc)
    return Dataset(
        Path(root),
        split,
        chosen,
        tuple(images),
        True,
        skipped,
        tuple(repairs.messages()),
        format="yolo",
        source=data_file,
    )


def _record(
    path: Path, label_file: Path, names: tuple[str, ...], label_of: dict[int, int], repairs: Repairs
) -> ImageRecord:
    height, width = stored_size(path)
    rows = [(row, False) for row in _rows(label_file, names)]
    rows += [(row, True) for row in _rows(label_file.with_suffix(DIFFICULT_SUFFIX), names)]
    boxes, labels, difficult = [], [], []
    for (class_id, cx, cy, w, h), hard in rows:
        if class_id not in label_of:
            repairs.unknown_class[names[class_id]] += 1
            continue
        boxes.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
        labels.append(label_of[class_id])
        difficult.append(hard)
    scaled = np.array(boxes, np.float64).reshape(-1, 4) * (width, height, width, height)
    fitted = repairs.fit(scaled, labels, difficult, height, width, label_file)
    return ImageRecord(path.stem, path, height, width, *fitted)


def _rows(label_file: Path, names: tuple[str, ...]) -> list[tuple[int, float, float, float, float]]:
    """The ``class cx cy w h`` rows of a label file (none when it does not exist)."""
    if not label_file.is_file():
        return []
    try:
        lines = label_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{label_file}: unreadable label file ({first_line(exc)})") from None
    rows = []
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            number_of_class, cx, cy, w, h = (float(v) for v in fields[:5])
        except ValueError:
            raise UserError(f"{label_file} line {number}: not 'class cx cy w h'") from None
        if not number_of_class.is_integer():  # Ultralytics reads "2.0" as class 2, as some converters write
            raise UserError(f"{label_file} line {number}: class {fields[0]} is not a whole number")
        class_id = int(number_of_class)
        if len(fields) != 5:
            raise UserError(f"{label_file} line {number}: {len(fields)} fields, not 5 (a polygon?)")
        if not 0 <= class_id < len(names):
            raise UserError(
                f"{label_file} line {number}: class {class_id}, but data.yaml names {len(names)} classes"
            )
        rows.append((class_id, cx, cy, w, h))
    return rows
