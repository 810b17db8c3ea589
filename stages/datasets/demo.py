"""The embedded demo dataset: synthetic images that the whole lineage trains on in minutes, written in the
VOC layout (or converted to COCO's or YOLO's).

Ten classes of flat shapes at 20 to 200 px, varied aspect ratios and positions, several an image, some
overlapping or cut by the border (marked truncated), tiny ones marked difficult, on textured backgrounds
with distractor clutter. Each class draws its colour from two of five hue families, so colour narrows the
class down to a few candidates and shape decides: the detectors have to learn shape, not only colour.

Deterministic for a seed: image k of the set is drawn from its own child of the seed's SeedSequence.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from xml.sax.saxutils import escape

import cv2
import numpy as np

from stages.core.atomic import write_json, writing
from stages.core.errors import UserError
from stages.datasets.options import DemoOptions

log = logging.getLogger("rcnn")

DEMO_CLASSES = (
    "arrow", "cross", "crescent", "diamond", "disc", "heart", "hexagon", "ring", "star", "triangle",
)  # fmt: skip
HUE_FAMILIES = (0, 30, 60, 105, 150)  # OpenCV hue (0..180): red, yellow, green, blue, magenta
MANIFEST = "demo.manifest.json"
SPLITS = ("train", "val", "trainval", "test")


def _unit_polygon(name: str) -> np.ndarray | None:
    """Outline of a shape in the unit square [0, 1]^2 as (P, 2) points; None for the round shapes."""
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    if name == "triangle":
        return np.array([[0.5, 0.0], [1.0, 1.0], [0.0, 1.0]])
    if name == "diamond":
        return np.array([[0.5, 0.0], [1.0, 0.5], [0.5, 1.0], [0.0, 0.5]])
    if name == "hexagon":
        a = np.arange(6) * np.pi / 3
        return 0.5 + 0.5 * np.stack([np.cos(a), np.sin(a)], 1)
    if name == "star":
        a = np.arange(10) * np.pi / 5 - np.pi / 2
        r = np.where(np.arange(10) % 2 == 0, 0.5, 0.2)
        pts = np.stack([r * np.cos(a), r * np.sin(a)], 1)
        return (pts - pts.min(0)) / (pts.max(0) - pts.min(0))
    if name == "cross":
        p, q = 0.33, 0.67  # the arms' edges
        return np.array(
            [[p, 0], [q, 0], [q, p], [1, p], [1, q], [q, q], [q, 1], [p, 1], [p, q], [0, q], [0, p], [p, p]]
        )
    if name == "arrow":
        return np.array([[0, 0.35], [0.55, 0.35], [0.55, 0], [1, 0.5], [0.55, 1], [0.55, 0.65], [0, 0.65]])
    if name == "heart":
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        pts = np.stack([x, y], 1)
        return (pts - pts.min(0)) / (pts.max(0) - pts.min(0))
    return None


def _shape_mask(name: str, width: int, height: int) -> np.ndarray:
    """(height, width) uint8 mask of the shape filling its box."""
    mask = np.zeros((height, width), np.uint8)
    scale = np.array([width - 1, height - 1], dtype=np.float64)
    polygon = _unit_polygon(name)
    if polygon is not None:
        cv2.fillPoly(mask, [np.round(polygon * scale).astype(np.int32)], 255, cv2.LINE_AA)
        return mask
    center = (round(scale[0] / 2), round(scale[1] / 2))
    axes = (max(1, int(scale[0] / 2)), max(1, int(scale[1] / 2)))
    cv2.ellipse(mask, center, axes, 0, 0, 360, 255, -1, cv2.LINE_AA)
    if name == "ring":
        inner = (max(1, int(axes[0] * 0.55)), max(1, int(axes[1] * 0.55)))
        cv2.ellipse(mask, center, inner, 0, 0, 360, 0, -1, cv2.LINE_AA)
    elif name == "crescent":
        bite = (center[0] + int(axes[0] * 0.55), center[1] - int(axes[1] * 0.2))
        cv2.ellipse(mask, bite, axes, 0, 0, 360, 0, -1, cv2.LINE_AA)
    return mask


def _hsv_color(rng: np.random.Generator, hue: float, saturation=(150, 255), value=(130, 255)):
    hsv = np.array([[[hue % 180, rng.integers(*saturation), rng.integers(*value)]]], dtype=np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A textured, cluttered background: smooth colour noise, fine grain, lines and blobs."""
    coarse = rng.uniform(60, 200, size=(rng.integers(3, 8), rng.integers(3, 8), 3)).astype(np.float32)
    image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    image = image * 0.6 + rng.normal(0, 12, size=(height, width, 3)).astype(np.float32)
    image = np.clip(image, 0, 255).astype(np.uint8)
    for _ in range(rng.integers(8, 20)):  # lines, in desaturated colours
        p1 = tuple(int(v) for v in rng.integers(0, [width, height]))
        p2 = tuple(int(v) for v in rng.integers(0, [width, height]))
        color = _hsv_color(rng, rng.uniform(0, 180), (0, 90), (40, 230)).tolist()
        cv2.line(image, p1, p2, color, int(rng.integers(1, 4)), cv2.LINE_AA)
    for _ in range(rng.integers(4, 10)):  # irregular blobs, any colour: distractors, not objects
        center = rng.uniform([0, 0], [width, height])
        radius = rng.uniform(6, 40)
        angles = np.sort(rng.uniform(0, 2 * np.pi, rng.integers(5, 9)))
        radii = radius * rng.uniform(0.5, 1.0, len(angles))
        pts = center + np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1)
        color = _hsv_color(rng, rng.uniform(0, 180), (40, 200), (60, 220)).tolist()
        cv2.fillPoly(image, [pts.astype(np.int32)], color, cv2.LINE_AA)
    return image


def _class_hues(label: int) -> tuple[int, int]:
    """Two hue families a class draws from; every family is shared by four classes."""
    return HUE_FAMILIES[label % 5], HUE_FAMILIES[(label // 2 + label + 2) % 5]


def _paint(image: np.ndarray, rng: np.random.Generator, label: int, box: tuple[int, int, int, int]):
    """Draw the object of class ``label`` filling ``box`` (x1, y1, x2, y2, may leave the image)."""
    name = DEMO_CLASSES[label]
    x1, y1, x2, y2 = box
    mask = _shape_mask(name, x2 - x1, y2 - y1).astype(np.float32) / 255.0
    color = _hsv_color(rng, rng.choice(_class_hues(label)) + rng.uniform(-6, 6))
    h, w = mask.shape
    shade = np.linspace(rng.uniform(0.7, 1.0), rng.uniform(0.85, 1.15), h, dtype=np.float32)[:, None]
    fill = color * shade[..., None] + rng.normal(0, 6, size=(h, w, 3)).astype(np.float32)
    ix1, iy1 = max(x1, 0), max(y1, 0)
    ix2, iy2 = min(x2, image.shape[1]), min(y2, image.shape[0])
    crop = (slice(iy1 - y1, iy2 - y1), slice(ix1 - x1, ix2 - x1))
    alpha = mask[crop][..., None]
    region = image[iy1:iy2, ix1:ix2].astype(np.float32)
    image[iy1:iy2, ix1:ix2] = np.clip(region * (1 - alpha) + fill[crop] * alpha, 0, 255)
    outline = (cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0.3)[crop]
    image[iy1:iy2, ix1:ix2][outline] = (color * 0.35).astype(np.uint8)


def _iou_1d(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def render_image(rng: np.random.Generator, options: DemoOptions):
    """One demo image and its objects: (image HxWx3 uint8 BGR, [(label, (x1, y1, x2, y2), truncated)])."""
    height, width = int(rng.integers(320, 501)), int(rng.integers(320, 501))
    image = _background(rng, height, width)
    objects: list[tuple[int, tuple[int, int, int, int], bool]] = []
    wanted = int(rng.integers(options.min_objects, options.max_objects + 1))
    for _ in range(wanted * 20):
        if len(objects) == wanted:
            break
        size = float(np.exp(rng.uniform(np.log(options.min_size), np.log(options.max_size))))  # many small
        aspect = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
        w = max(8, int(size * min(1.0, aspect)))
        h = max(8, int(size * min(1.0, 1 / aspect)))
        x1 = int(rng.integers(-w // 3, width - 2 * w // 3))
        y1 = int(rng.integers(-h // 3, height - 2 * h // 3))
        box = (x1, y1, x1 + w, y1 + h)
        if any(_iou_1d(box, other) > 0.25 for _, other, _ in objects):
            continue
        label = int(rng.integers(len(DEMO_CLASSES)))
        _paint(image, rng, label, box)
        truncated = x1 < 0 or y1 < 0 or box[2] > width or box[3] > height
        objects.append((label, box, truncated))
    return image, objects


def _annotation_xml(image_id: str, height: int, width: int, objects, difficult_below: int) -> str:
    lines = [
        "<annotation>",
        "  <folder>demo</folder>",
        f"  <filename>{escape(image_id)}.jpg</filename>",
        f"  <size><width>{width}</width><height>{height}</height><depth>3</depth></size>",
    ]
    for label, (x1, y1, x2, y2), truncated in objects:
        # Toolkit box (x1, y1, x2, y2), clipped -> VOC 1-based inclusive pixels.
        xmin, ymin = max(x1, 0) + 1, max(y1, 0) + 1
        xmax, ymax = min(x2, width), min(y2, height)
        difficult = max(x2 - x1, y2 - y1) < difficult_below
        lines += [
            "  <object>",
            f"    <name>{DEMO_CLASSES[label]}</name>",
            "    <pose>Unspecified</pose>",
            f"    <truncated>{int(truncated)}</truncated>",
            f"    <difficult>{int(difficult)}</difficult>",
            f"    <bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax>"
            "</bndbox>",
            "  </object>",
        ]
    return "\n".join([*lines, "</annotation>", ""])


def generate_demo(
    out: Path, options: DemoOptions = DemoOptions(), force: bool = False, layout: str = "voc"
) -> Path:
    """Write the demo dataset to ``out`` (splits train/val/trainval/test) in ``layout`` (voc, coco or
    yolo: the same images and boxes, converted); returns ``out``.

    An existing ``out`` made with the same options is kept as it is; another one needs ``force``.
    The set is built in a temporary folder beside ``out`` and renamed into place when complete.
    """
    out = Path(out)
    manifest = out / MANIFEST
    if out.exists():
        if manifest.is_file() and _same_options(manifest, options, layout) and not force:
            log.info("%s: demo dataset already there (seed %d)", out, options.seed)
            return out
        if not force:
            raise UserError(f"{out}: exists and is not this demo dataset; pass --force to replace it")
    if layout != "voc":
        return _converted_demo(out, options, layout)
    started = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        with writing(out):
            for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
                (staging / sub).mkdir(parents=True)
            counts = {"train": options.num_train, "val": options.num_val, "test": options.num_test}
            seeds = np.random.SeedSequence(options.seed).spawn(sum(counts.values()))
            splits: dict[str, list[str]] = {name: [] for name in counts}
            k = 0
            for split, count in counts.items():
                for _ in range(count):
                    image_id = f"{k:06d}"
                    image, objects = render_image(np.random.default_rng(seeds[k]), options)
                    picture = staging / "JPEGImages" / f"{image_id}.jpg"
                    if not cv2.imwrite(str(picture), image, [cv2.IMWRITE_JPEG_QUALITY, 92]):
                        raise OSError(f"{picture}: OpenCV could not write it")
                    height, width = image.shape[:2]
                    (staging / "Annotations" / f"{image_id}.xml").write_text(
                        _annotation_xml(image_id, height, width, objects, options.difficult_below),
                        encoding="utf-8",
                    )
                    splits[split].append(image_id)
                    k += 1
            splits["trainval"] = splits["train"] + splits["val"]
            for split, ids in splits.items():
                (staging / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
            write_json(
                staging / MANIFEST,
                {
                    "stage": "data demo",
                    "options": asdict(options),
                    "classes": list(DEMO_CLASSES),
                    "seconds": round(time.perf_counter() - started, 3),
                },
            )
            if out.exists():
                shutil.rmtree(out)
            staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _converted_demo(out: Path, options: DemoOptions, layout: str) -> Path:
    """The VOC demo made beside ``out``, each split converted to ``layout`` (images hard-linked)."""
    from stages.datasets.convert import convert
    from stages.datasets.formats import load_dataset

    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as scratch:
        voc = generate_demo(Path(scratch) / "voc", options)
        staging = Path(scratch) / layout
        for split in SPLITS:
            convert(load_dataset(voc, split, format="voc"), layout, staging)
        write_json(
            staging / MANIFEST,
            {
                "stage": "data demo",
                "options": {**asdict(options), "format": layout},
                "classes": list(DEMO_CLASSES),
            },
        )
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    return out


def _same_options(manifest: Path, options: DemoOptions, layout: str) -> bool:
    import json

    try:
        stored = json.loads(manifest.read_text(encoding="utf-8")).get("options")
    except (OSError, ValueError):
        return False
    defaults = asdict(DemoOptions())  # a set made before an option existed was made with its default
    return isinstance(stored, dict) and {**defaults, "format": "voc", **stored} == {
        **asdict(options),
        "format": layout,
    }
