"""The COCO layout: ``ROOT/annotations/instances_<split>.json`` with the images in ``ROOT/<split>/`` (COCO's
own layout) or ``ROOT/images/``.

A ``bbox`` is ``[x, y, width, height]`` in continuous pixels, which is the toolkit's convention once ``x2 = x
+ width`` (``stages.core.geometry``). Crowd regions (``iscrowd``) are kept as difficult objects: out of
training, ignored by evaluation. Category ids may be sparse (COCO's 80 of 1..90): labels 1..C follow the ids
in increasing order, and ``Dataset.category_ids`` maps them back.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np

from stages.core.errors import UserError
from stages.datasets.records import Dataset, ImageRecord, Repairs, check_plain_name, check_relative_path


def annotation_file(root: Path, split: str) -> Path:
    """``ROOT/annotations/instances_<split>.json``."""
    check_plain_name(split, "--split")
    return Path(root) / "annotations" / f"instances_{split}.json"


def read_json(path: Path) -> dict[str, Any]:
    """A COCO annotation file, checked to hold its three lists. Parsed once a process: the reader and
    the COCO metric share it (a train2017-size file takes 10 s), until the file changes. Callers must not
    modify it."""
    if not path.is_file():
        folder = path.parent
        available = sorted(p.stem.removeprefix("instances_") for p in folder.glob("instances_*.json"))
        hint = f" (splits available: {', '.join(available)})" if available else ""
        raise UserError(f"{path}: annotation file not found{hint}")
    stat = path.stat()
    content = _parsed(str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if not isinstance(content, dict) or not isinstance(content.get("images"), list):
        raise UserError(f"{path}: not a COCO annotation file (no list of images)")
    if not all(isinstance(content.get(key, []), list) for key in ("categories", "annotations")):
        raise UserError(f"{path}: not a COCO annotation file (categories and annotations must be lists)")
    return content


@functools.lru_cache(maxsize=1)
def _parsed(path: str, mtime_ns: int, size: int) -> Any:
    """The JSON at ``path`` as it was at (``mtime_ns``, ``size``)."""
    try:
        with open(path, "rb") as file:
            return json.load(file, object_hook=_without_segmentation)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a JSON file ({exc})") from None


def _without_segmentation(entry: dict[str, Any]) -> dict[str, Any]:
    """Drop an annotation's outline as soon as it is parsed: boxes are all the toolkit uses, and the
    polygons are most of a COCO file (and of its memory as Python objects)."""
    entry.pop("segmentation", None)
    return entry


def read_coco(root: Path, split: str, classes: tuple[str, ...] | None, skip_bad: bool) -> Dataset:
    """Read the split's COCO JSON: images, their objects and the categories (``classes`` restricts them)."""
    path = annotation_file(root, split)
    content = read_json(path)
    category_entries = content.get("categories", [])
    try:
        categories = sorted((int(c["id"]), str(c["name"])) for c in category_entries)
        supercategory_of = {int(c["id"]): str(c.get("supercategory") or "") for c in category_entries}
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{path}: a category without a numeric id and a name") from None
    names = [name for _, name in categories]
    if len(set(names)) != len(names):
        raise UserError(f"{path}: two categories share a name")
    if classes:
        unknown = sorted(set(classes) - set(names))
        if unknown:
            raise UserError(f"{path}: no category named {', '.join(unknown)}")
        categories = [c for c in categories if c[1] in classes]
        categories.sort(key=lambda c: list(classes).index(c[1]))
    supercategories = tuple(supercategory_of[category_id] for category_id, _ in categories)
    label_of = {category_id: label for label, (category_id, _) in enumerate(categories, start=1)}
    folder = _image_folder(Path(root), split)
    objects: dict[Any, list[dict]] = {}
    for number, annotation in enumerate(content.get("annotations", []), start=1):
        keys = (
            (annotation.get("image_id"), annotation.get("category_id"))
            if isinstance(annotation, dict)
            else ()
        )
        if not all(isinstance(key, (int, str)) for key in keys) or not keys:
            raise UserError(
                f"{path}: annotation {number} lacks an image_id or a category_id (a number or a string)"
            )
        objects.setdefault(annotation["image_id"], []).append(annotation)
    repairs, images, skipped = Repairs(), [], {}
    stems: dict[str, Any] = {}
    for number, image in enumerate(content["images"], start=1):
        try:
            record = _record(image, number, folder, path, objects, label_of, repairs)
        except UserError as exc:
            if not skip_bad:
                raise
            skipped[str(image.get("id") if isinstance(image, dict) else number)] = str(exc)
            continue
        if record.image_id in stems:
            raise UserError(
                f"{path}: images {stems[record.image_id]!r} and {record.source_id!r} share the file "
                f"name stem {record.image_id!r}; the toolkit names images by their stems"
            )
        stems[record.image_id] = record.source_id
        images.append(record)
    return Dataset(
        Path(root),
        split,
        tuple(name for _, name in categories),
        tuple(images),
        True,
        skipped,
        tuple(repairs.messages()),
        format="coco",
        source=path,
        category_ids=tuple(category_id for category_id, _ in categories),
        supercategories=supercategories if any(supercategories) else (),
    )


def _image_folder(root: Path, split: str) -> Path:
    for folder in (root / split, root / "images" / split, root / "images"):
        if folder.is_dir():
            return folder
    raise UserError(f"{root}: no image folder for split {split!r} ({split}/, images/{split}/ or images/)")


def _record(
    image: Any,
    number: int,
    folder: Path,
    path: Path,
    objects: dict[Any, list[dict]],
    label_of: dict[int, int],
    repairs: Repairs,
) -> ImageRecord:
    try:
        source_id, file_name = image["id"], str(image["file_name"])
        height, width = int(image["height"]), int(image["width"])
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{path}: image {number} lacks an id, a file_name, a width or a height") from None
    image_path = folder / check_relative_path(file_name, f"{path}: image {source_id}")
    if height <= 0 or width <= 0:
        raise UserError(f"{path}: image {source_id} ({file_name}) has size {width} x {height}")
    if not image_path.is_file():
        raise UserError(f"{image_path}: image not found (image {source_id} of {path.name})")
    boxes, labels, crowd = [], [], []
    for annotation in objects.get(source_id, []):
        category_id = annotation.get("category_id")
        if category_id not in label_of:
            repairs.unknown_class[f"category id {category_id}"] += 1
            continue
        try:
            x, y, w, h = (float(v) for v in annotation["bbox"])
        except (KeyError, TypeError, ValueError):
            raise UserError(
                f"{path}: annotation {annotation.get('id')} has no [x, y, width, height] bbox"
            ) from None
        boxes.append((x, y, x + w, y + h))
        labels.append(label_of[category_id])
        crowd.append(bool(annotation.get("iscrowd", 0)))
    fitted = repairs.fit(np.array(boxes, np.float32), labels, crowd, height, width, path)
    return ImageRecord(Path(file_name).stem, image_path, height, width, *fitted, source_id=source_id)
