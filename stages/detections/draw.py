"""Pictures of detections: boxes, class names and scores drawn on the image, saved as PNG."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from stages.core.atomic import atomic_path
from stages.networks.inputs import read_image

_PALETTE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)  # fmt: skip


MAX_PICTURE_SIDE = 4096
"""Pictures of larger images are drawn shrunk to this on their longer side (a 12,000 x 9,000 photo would
make a 300 MB canvas and a PNG too large to look at)."""


def draw_detections(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
    classes: Sequence[str],
    max_side: int = MAX_PICTURE_SIDE,
) -> np.ndarray:
    """(H, W, 3) uint8 RGB with each (x1, y1, x2, y2) box outlined in its class colour and labelled
    "name score"; weakest drawn first so the strongest end on top. Shrunk to ``max_side`` if larger."""
    factor = min(1.0, max_side / max(image.shape[:2]))
    if factor < 1:
        size = (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[0] * factor)))
        canvas = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        boxes = np.asarray(boxes) * factor
    else:
        canvas = np.ascontiguousarray(image).copy()
    side = max(canvas.shape[:2])
    thickness = max(1, round(side / 400))
    # Labels grow with the picture, so that they stay readable where it is shown smaller (a grid's
    # 400-pixel cells, a screen): a 1000-pixel picture's are 2.5 times a 400-pixel one's.
    font_scale = max(0.4, side / 1000)
    font_thickness = max(1, round(font_scale))
    for index in np.argsort(scores, kind="stable"):
        colour = _PALETTE[(int(labels[index]) - 1) % len(_PALETTE)]
        x1, y1, x2, y2 = (round(float(v)) for v in boxes[index])
        cv2.rectangle(canvas, (x1, y1), (max(x1, x2 - 1), max(y1, y2 - 1)), colour, thickness)
        text = f"{classes[int(labels[index]) - 1]} {scores[index]:.2f}"
        (width, height), baseline = cv2.getTextSize(
            text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, font_thickness
        )
        top = max(0, y1 - height - baseline - 2)
        cv2.rectangle(canvas, (x1, top), (x1 + width + 2, top + height + baseline + 2), colour, -1)
        cv2.putText(
            canvas,
            text,
            (x1 + 1, top + height + 1),
            cv2.FONT_HERSHEY_SIMPLEX,
            font_scale,
            (255, 255, 255),
            font_thickness,
            cv2.LINE_AA,
        )
    return canvas


def write_png(path: Path, image: np.ndarray) -> None:
    """Write an RGB image as PNG, atomically."""
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError(f"PNG encoding failed for {path}")
    with atomic_path(Path(path)) as tmp:
        tmp.write_bytes(encoded.tobytes())


def write_grid(path: Path, pictures: Sequence[Path], cell_width: int = 400) -> None:
    """Tile the PNGs ``pictures`` (each scaled to ``cell_width`` wide) into one PNG, about square, white
    between and around them."""
    images = []
    for picture in pictures:
        image = read_image(picture)
        height = round(image.shape[0] * cell_width / image.shape[1])
        images.append(cv2.resize(image, (cell_width, height), interpolation=cv2.INTER_AREA))
    columns = math.ceil(math.sqrt(len(images)))
    gap = 8
    row_heights = [max(i.shape[0] for i in images[k : k + columns]) for k in range(0, len(images), columns)]
    row_tops = np.cumsum([gap] + [height + gap for height in row_heights])
    canvas = np.full((row_tops[-1], columns * (cell_width + gap) + gap, 3), 255, dtype=np.uint8)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        top, left = row_tops[row], gap + column * (cell_width + gap)
        canvas[top : top + image.shape[0], left : left + cell_width] = image
    write_png(path, canvas)
