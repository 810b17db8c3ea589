"""The detections exchange format every method writes and `evaluate` reads.

A JSON list of ``{"image_id": str, "class": str, "score": float, "box": [x1, y1, x2, y2]}`` with boxes in
the toolkit's pixel convention (``stages.core.geometry``: 0-based, continuous, x2 - x1 = width).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.core.atomic import write_json
from stages.core.errors import UserError
from stages.detections.postprocess import ImageDetections


@dataclass(frozen=True)
class Detections:
    """Detections as columns: image_ids (N,) str, classes (N,) str, scores (N,) float64, boxes (N, 4)."""

    image_ids: np.ndarray
    classes: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


def detections_of(
    image_ids: Sequence[str], found: Sequence[ImageDetections], classes: Sequence[str]
) -> Detections:
    """The detections of images ``image_ids`` (labels 1..C of ``classes``) as one set of columns."""
    names = np.array(classes, dtype=object)
    counts = [len(d) for d in found]
    return Detections(
        np.repeat(np.array(image_ids, dtype=object), counts),
        names[np.concatenate([d.labels for d in found]).astype(np.int64) - 1] if found else names[:0],
        np.concatenate([d.scores for d in found]).astype(np.float64) if found else np.zeros(0),
        np.concatenate([d.boxes for d in found]).reshape(-1, 4) if found else np.zeros((0, 4), np.float32),
    )


def read_detections(path: Path) -> Detections:
    """Read and validate a detections file; UserError names the file and the first bad entry."""
    path = Path(path)
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{path}: not a JSON file ({exc})") from None
    if not isinstance(entries, list):
        raise UserError(f"{path}: expected a JSON list of detections, found {type(entries).__name__}")
    ids, classes, scores, boxes = [], [], [], []
    for index, entry in enumerate(entries):
        where = f"{path}: detection {index}"
        if not isinstance(entry, dict) or not {"image_id", "class", "score", "box"} <= entry.keys():
            raise UserError(f"{where}: needs the keys image_id, class, score and box")
        box, score = entry["box"], entry["score"]
        if not isinstance(entry["image_id"], str) or not isinstance(entry["class"], str):
            raise UserError(f"{where}: image_id and class must be strings")
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise UserError(f"{where}: score must be a finite number, got {score!r}")
        if (
            not isinstance(box, list)
            or len(box) != 4
            or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in box)
            or box[2] < box[0]
            or box[3] < box[1]
        ):
            raise UserError(f"{where}: box must be [x1, y1, x2, y2] with x2 >= x1, y2 >= y1, got {box!r}")
        ids.append(entry["image_id"])
        classes.append(entry["class"])
        scores.append(float(score))
        boxes.append(box)
    return Detections(
        np.array(ids, dtype=object),
        np.array(classes, dtype=object),
        np.array(scores, dtype=np.float64),
        np.array(boxes, dtype=np.float32).reshape(-1, 4),
    )


def write_detections(path: Path, detections: Detections) -> None:
    """Write detections in the exchange format, atomically."""
    write_json(
        path,
        [
            {
                "image_id": str(i),
                "class": str(c),
                "score": round(float(s), 6),
                "box": [round(float(v), 2) for v in b],
            }
            for i, c, s, b in zip(
                detections.image_ids, detections.classes, detections.scores, detections.boxes, strict=True
            )
        ],
    )
