"""The VOC layout: ``ROOT/Annotations/<id>.xml``, ``ROOT/JPEGImages/<id>.jpg``,
``ROOT/ImageSets/Main/<split>.txt`` (the VOC2007 devkit layout, and what labelling tools write).

Boxes are converted once here from VOC's 1-based inclusive pixels to the toolkit's convention
(``stages.core.geometry``). XML is parsed with defusedxml: no entity expansion, no external entities.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path
from typing import overload

import numpy as np
from defusedxml import DefusedXmlException
from defusedxml import ElementTree as SafeElementTree

from stages.core.errors import UserError
from stages.core.geometry import voc_to_boxes
from stages.datasets.image_files import stored_size
from stages.datasets.records import Dataset, ImageRecord, Repairs, check_plain_name

log = logging.getLogger("rcnn")

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")
_VOC_YEAR = re.compile(r"VOC\d{4}")


def split_file(root: Path, split: str) -> Path:
    """``ROOT/ImageSets/Main/<split>.txt``."""
    return Path(root) / "ImageSets" / "Main" / f"{split}.txt"


def read_split(root: Path, split: str) -> list[str]:
    """Image ids listed in the split file (first token of each non-empty line)."""
    check_plain_name(split, "--split")
    path = split_file(root, split)
    if not path.is_file():
        available = sorted(p.stem for p in path.parent.glob("*.txt")) if path.parent.is_dir() else []
        hint = f" (available: {', '.join(available)})" if available else ""
        raise UserError(f"{path}: split file not found{hint}")
    ids = []
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: unreadable split file ({exc})") from None
    for number, line in enumerate(lines, start=1):
        tokens = line.split()
        if tokens:
            ids.append(check_plain_name(tokens[0], f"{path} line {number}"))
    if not ids:
        raise UserError(f"{path}: the split lists no images")
    if len(set(ids)) != len(ids):
        duplicate = next(i for i, c in Counter(ids).items() if c > 1)
        raise UserError(f"{path}: image id {duplicate!r} is listed more than once")
    return ids


def _parse_xml(path: Path):
    try:
        return SafeElementTree.parse(path).getroot()
    except (SafeElementTree.ParseError, DefusedXmlException, OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: unreadable annotation ({exc})") from None


@overload
def _text(node, tag: str, default: str) -> str: ...
@overload
def _text(node, tag: str, default: None = None) -> str | None: ...
def _text(node, tag: str, default: str | None = None) -> str | None:
    """The stripped text of ``node``'s child ``tag``, ``default`` when it is missing or empty."""
    child = node.find(tag)
    return default if child is None or child.text is None else child.text.strip()


def _image_path(root: Path, image_id: str, xml_filename: str | None) -> Path:
    folder = Path(root) / "JPEGImages"
    candidates = [folder / f"{image_id}.jpg"]
    if xml_filename:
        candidates.append(folder / check_plain_name(xml_filename, f"<filename> of {image_id}"))
    candidates += [folder / f"{image_id}{suffix}" for suffix in IMAGE_SUFFIXES[1:]]
    return next((p for p in candidates if p.is_file()), candidates[0])


def discover_classes(root: Path) -> tuple[str, ...]:
    """The class names: VOC's 20 for a VOC year folder, else every name in ``ROOT/Annotations`` (sorted)."""
    root = Path(root)
    if _VOC_YEAR.fullmatch(root.resolve().name):
        return VOC_CLASSES
    names, unreadable = set(), []
    for path in sorted((root / "Annotations").glob("*.xml")):
        try:
            xml = _parse_xml(path)
        except UserError:  # reported when (and if) a split reads it
            unreadable.append(path.name)
            continue
        for obj in xml.iter("object"):
            name = _text(obj, "name")
            if name:
                names.add(name)
    if unreadable:
        log.warning(
            "class names taken without %d unreadable annotations (first: %s)", len(unreadable), unreadable[0]
        )
    if not names:
        raise UserError(f"{root / 'Annotations'}: no annotated objects to take class names from")
    return tuple(sorted(names))


def _read_objects(
    xml, path: Path, class_index: dict[str, int], height: int, width: int, problems: Repairs
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """(boxes, labels, difficult, truncated) of the objects of the known classes, repaired; an object
    without ``<difficult>`` or ``<truncated>`` is neither."""
    voc_boxes, labels, difficult, truncated = [], [], [], []
    for number, obj in enumerate(xml.iter("object"), start=1):
        name = _text(obj, "name", "")
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise UserError(f"{path}: object {number} ({name or 'unnamed'}) has no <bndbox>")
        try:
            coords = [float(_text(bndbox, tag, "")) for tag in ("xmin", "ymin", "xmax", "ymax")]
        except ValueError:
            raise UserError(f"{path}: object {number} ({name}) has a non-numeric <bndbox>") from None
        if name not in class_index:
            problems.unknown_class[name] += 1
            continue
        voc_boxes.append(coords)
        labels.append(class_index[name])
        difficult.append(_text(obj, "difficult", "0") in {"1", "true", "True"})
        truncated.append(_text(obj, "truncated", "0") in {"1", "true", "True"})
    boxes = voc_to_boxes(np.array(voc_boxes, dtype=np.float32).reshape(-1, 4))
    return problems.fit(boxes, labels, difficult, height, width, path, truncated)


def read_voc(root: Path, split: str, classes: tuple[str, ...] | None, skip_bad: bool) -> Dataset:
    """Read the split's annotations (image sizes from the XML, or from the image header when absent).

    A split whose images have no XML at all is read as unannotated; a split where only some lack it is
    an error. Unreadable annotations raise UserError naming them, or with ``skip_bad`` are skipped.
    """
    ids = read_split(root, split)
    annotation_dir = root / "Annotations"
    has_xml = [(annotation_dir / f"{i}.xml").is_file() for i in ids]
    annotated = any(has_xml)
    if annotated and not all(has_xml) and not skip_bad:
        missing = ids[has_xml.index(False)]
        raise UserError(
            f"{annotation_dir / (missing + '.xml')}: annotation missing "
            f"({has_xml.count(False)} of {len(ids)} images of split {split!r} have none)"
        )
    classes = tuple(classes) if classes else (discover_classes(root) if annotated else ())
    class_index = {name: i + 1 for i, name in enumerate(classes)}
    repairs, images, skipped = Repairs(), [], {}
    for image_id, xml_exists in zip(ids, has_xml, strict=True):
        try:
            if annotated and not xml_exists:
                raise UserError(f"{annotation_dir / (image_id + '.xml')}: annotation missing")
            images.append(_read_record(root, image_id, annotated, class_index, repairs))
        except UserError as exc:
            if not skip_bad:
                raise
            skipped[image_id] = str(exc)
    return Dataset(
        root,
        split,
        classes,
        tuple(images),
        annotated,
        skipped,
        tuple(repairs.messages()),
        format="voc",
        source=split_file(root, split),
    )


def _read_record(
    root: Path, image_id: str, annotated: bool, class_index: dict[str, int], problems: Repairs
) -> ImageRecord:
    empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, bool))
    if not annotated:
        path = _image_path(root, image_id, None)
        return ImageRecord(image_id, path, *stored_size(path), *empty)
    xml_path = root / "Annotations" / f"{image_id}.xml"
    xml = _parse_xml(xml_path)
    filename = _text(xml, "filename")
    path = _image_path(root, image_id, filename)
    if filename and Path(filename).stem != image_id:
        problems.note("misnamed", xml_path)  # a copied annotation, or one of another image
    size = xml.find("size")
    try:
        width, height = (int(float(_text(size, tag, "0"))) for tag in ("width", "height"))
    except (AttributeError, ValueError):
        width = height = 0
    if width <= 0 or height <= 0:
        height, width = stored_size(path)
    elif not path.is_file():
        raise UserError(f"{path}: image not found (listed in split, annotated in {xml_path.name})")
    return ImageRecord(
        image_id, path, height, width, *_read_objects(xml, xml_path, class_index, height, width, problems)
    )
