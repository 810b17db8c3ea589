"""Writing a split in another layout (``rcnn data convert``), so that a dataset moves between ecosystems.

Boxes leave the toolkit's convention once, here: VOC's 1-based inclusive pixels, COCO's ``[x, y, width,
height]``, YOLO's centre and size normalised by the image. Images are hard-linked where the file system
allows (no copy on disk), copied elsewhere. Difficult objects are COCO's crowd regions (both are ignored by
evaluation); YOLO has no such flag, so they go to the file beside the labels that
``stages.datasets.yolo.DIFFICULT_SUFFIX`` describes. Truncated objects are marked in VOC only: COCO and
YOLO have no such flag.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import yaml

from stages.core.atomic import atomic_path, ensure_folder, write_json
from stages.core.errors import UserError
from stages.core.geometry import boxes_to_voc
from stages.core.progress import SILENT, Progress
from stages.datasets.coco import annotation_file
from stages.datasets.records import Dataset, ImageRecord
from stages.datasets.voc import split_file
from stages.datasets.yolo import DATA_FILE, DIFFICULT_SUFFIX


@dataclass(frozen=True)
class Conversion:
    """What ``convert`` wrote: where, how many images and objects."""

    out: Path
    images: int
    objects: int


def convert(dataset: Dataset, to: str, out: Path, progress: Progress = SILENT) -> Conversion:
    """Write ``dataset`` (one split) to ``out`` in layout ``to`` (voc, coco or yolo); other splits already
    in ``out`` are kept."""
    writers = {"voc": _write_voc, "coco": _write_coco, "yolo": _write_yolo}
    if to not in writers:
        raise UserError(f"--to {to}: not one of {', '.join(writers)}")
    out = ensure_folder(Path(out))
    if out.resolve() == Path(dataset.root).resolve():
        raise UserError(f"{out}: the dataset's own folder; convert to another one")
    writers[to](dataset, out, progress)
    objects = sum(len(r.labels) for r in dataset.images)
    return Conversion(out, len(dataset), objects)


def _place_image(record: ImageRecord, folder: Path) -> str:
    """Link (or copy) the record's image into ``folder`` under its own name; return that name."""
    target = ensure_folder(folder) / record.path.name
    if target.exists() and target.samefile(record.path):
        return target.name
    with atomic_path(target) as tmp:
        tmp.unlink()
        try:
            os.link(record.path, tmp)
        except OSError:  # another file system, or links not allowed
            shutil.copyfile(record.path, tmp)
    return target.name


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _number(value: float) -> str:
    return f"{float(value):.10g}"


def _write_voc(dataset: Dataset, out: Path, progress: Progress) -> None:
    with progress.task("writing VOC", len(dataset), "img") as advance:
        for record in dataset.images:
            name = _place_image(record, out / "JPEGImages")
            size = f"<width>{record.width}</width><height>{record.height}</height><depth>3</depth>"
            lines = ["<annotation>", f"  <filename>{escape(name)}</filename>", f"  <size>{size}</size>"]
            truncation = [None] * len(record.labels) if record.truncated is None else record.truncated
            for box, label, difficult, truncated in zip(
                boxes_to_voc(record.boxes), record.labels, record.difficult, truncation, strict=True
            ):
                coords = "".join(
                    f"<{tag}>{_number(v)}</{tag}>"
                    for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True)
                )
                lines += [
                    "  <object>",
                    f"    <name>{escape(dataset.classes[label - 1])}</name>",
                    *([] if truncated is None else [f"    <truncated>{int(truncated)}</truncated>"]),
                    f"    <difficult>{int(difficult)}</difficult>",
                    f"    <bndbox>{coords}</bndbox>",
                    "  </object>",
                ]
            _write_text(
                out / "Annotations" / f"{record.image_id}.xml", "\n".join([*lines, "</annotation>", ""])
            )
            advance()
    _write_text(split_file(out, dataset.split), "".join(f"{r.image_id}\n" for r in dataset.images))


def _write_coco(dataset: Dataset, out: Path, progress: Progress) -> None:
    category_ids = dataset.category_ids or tuple(range(1, len(dataset.classes) + 1))
    images: list[dict] = []
    annotations: list[dict] = []
    with progress.task("writing COCO", len(dataset), "img") as advance:
        for number, record in enumerate(dataset.images, start=1):
            name = _place_image(record, out / dataset.split)
            image_id = record.source_id if isinstance(record.source_id, int) else number
            images.append({"id": image_id, "file_name": name, "width": record.width, "height": record.height})
            for box, label, difficult in zip(record.boxes, record.labels, record.difficult, strict=True):
                x1, y1, x2, y2 = (float(v) for v in box)
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": category_ids[label - 1],
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "area": (x2 - x1) * (y2 - y1),
                        "iscrowd": int(difficult),
                    }
                )
            advance()
    categories = [{"id": i, "name": n} for i, n in zip(category_ids, dataset.classes, strict=True)]
    for category, supercategory in zip(categories, dataset.supercategories, strict=False):
        category["supercategory"] = supercategory
    write_json(
        annotation_file(out, dataset.split),
        {"images": images, "annotations": annotations, "categories": categories},
    )


def _write_yolo(dataset: Dataset, out: Path, progress: Progress) -> None:
    images, labels = out / "images" / dataset.split, out / "labels" / dataset.split
    with progress.task("writing YOLO", len(dataset), "img") as advance:
        for record in dataset.images:
            _place_image(record, images)
            scale = np.array([record.width, record.height] * 2, np.float64)
            rows: dict[bool, list[str]] = {False: [], True: []}
            for box, label, difficult in zip(record.boxes, record.labels, record.difficult, strict=True):
                x1, y1, x2, y2 = np.asarray(box, np.float64) / scale
                centre_size = ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)
                rows[bool(difficult)].append(
                    f"{label - 1} " + " ".join(f"{v:.6f}" for v in centre_size) + "\n"
                )
            _write_text(labels / f"{record.image_id}.txt", "".join(rows[False]))
            hard = labels / f"{record.image_id}{DIFFICULT_SUFFIX}"
            if rows[True]:
                _write_text(hard, "".join(rows[True]))
            else:
                hard.unlink(missing_ok=True)
            advance()
    data_file = out / DATA_FILE
    content = yaml.safe_load(data_file.read_text(encoding="utf-8")) if data_file.is_file() else {}
    content = content if isinstance(content, dict) else {}
    content.update({dataset.split: f"images/{dataset.split}", "names": list(dataset.classes)})
    _write_text(data_file, yaml.safe_dump(content, sort_keys=False, allow_unicode=True))
