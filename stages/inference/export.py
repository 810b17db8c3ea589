"""A method's detections of a split as the result files other tools read (``rcnn export``).

- ``coco``: one JSON list of ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` with the ids of
  the dataset's own JSON (COCO's numbers; 1..N and 1..C for other layouts), as ``COCO.loadRes`` reads it.
- ``voc``: the devkit's ``comp4_det_<split>_<class>.txt`` files, one ``image_id score x1 y1 x2 y2`` line a
  detection in VOC's 1-based inclusive pixels (comp4: trained on data of one's own choosing).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.core.atomic import atomic_path, ensure_folder, write_json
from stages.core.errors import UserError
from stages.core.geometry import boxes_to_voc
from stages.datasets.formats import load_dataset
from stages.detections.files import read_detections
from stages.evaluation.coco import results
from stages.methods.base import PLAIN, Method, Variant
from stages.runs.layout import RunLayout, manifest_path, require_artifact


@dataclass(frozen=True)
class Export:
    """What ``export`` wrote: the files and how many detections."""

    paths: tuple[Path, ...]
    detections: int


def export(
    run: RunLayout,
    method: Method,
    split: str,
    to: str,
    out: Path,
    *,
    data: Path | None = None,
    variant: Variant = PLAIN,
) -> Export:
    """Write ``method``'s detections of ``split`` (from ``rcnn evaluate --run`` or ``rcnn run``) in format
    ``to`` to ``out`` (a file for coco, a folder for voc). The dataset is the one the detections were
    made on (their manifest records it), unless ``data`` names it."""
    source = method.files(run).detections(split, variant.key)
    made_on = require_artifact(source, run.command_for(source, data)).get("results", {})
    root = data or made_on.get("dataset_root")
    if root is None:
        raise UserError(f"{manifest_path(source)}: does not say which dataset it was made on; pass --data")
    detections = read_detections(source)
    dataset = load_dataset(Path(root), split, format=None if data else made_on.get("dataset_format"))
    if to == "coco":
        found = results(dataset, detections)
        write_json(Path(out), found)
        return Export((Path(out),), len(found))
    folder = ensure_folder(Path(out))
    paths = []
    for name in dataset.classes:
        mine = detections.classes == name
        lines = [
            f"{image_id} {score:.6f} " + " ".join(f"{v:.2f}" for v in box) + "\n"
            for image_id, score, box in zip(
                detections.image_ids[mine],
                detections.scores[mine],
                boxes_to_voc(detections.boxes[mine]),
                strict=True,
            )
        ]
        path = folder / f"comp4_det_{split}_{name}.txt"
        with atomic_path(path) as tmp:
            tmp.write_text("".join(lines), encoding="utf-8")
        paths.append(path)
    return Export(tuple(paths), int(np.isin(detections.classes, dataset.classes).sum()))
