"""Helpers the tests share: hand-made VOC datasets, images, and the command line through Typer's runner."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
from typer.testing import CliRunner

from rcnn_cli.app import app
from stages.cache.files import CacheWriter
from stages.datasets.options import DemoOptions
from stages.detections.files import Detections
from stages.training.matching import LabelledRegions

TINY = DemoOptions(seed=7, num_train=3, num_val=2, num_test=3)
"""The tiny demo dataset of the ``tiny_demo`` fixture: 3 train, 2 val, 3 test images."""


# Annotations that a safe XML parser refuses: entity expansion ("billion laughs") and an external entity.
BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<annotation><object><name>&lol2;</name></object></annotation>"""
EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<annotation><object><name>&xxe;</name></object></annotation>"""


ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT_SAVED = "stages.training.solver:_save"
"""The call after which a training stage's checkpoint is on disk."""


RUN_CONFIG = """
[data]
root = "{data}"

[run]
folder = "{run}"
methods = ["rcnn", "spp", "fast"]

[propose]
workers = 1
max_side = 160

[pretrain]
iterations = 100
batch_size = 32
checkpoint_every = 50

[rcnn.finetune]
iterations = 4
checkpoint_every = 2

[spp.features]
scales = [96, 160]

[spp.finetune]
iterations = 4

[fast.finetune]
iterations = 4
learning_rate = 0.01
checkpoint_every = 2

[fast.finetune.sampling]
scales = [96]

[fast.compress]

[detect]
images = 2
"""
"""A small run of the lineage's first three methods on the tiny demo (Faster R-CNN's chain is
``tests/methods/faster/test_chain.py``): ``RUN_CONFIG.format(data=..., run=...)``."""


def make_run(data: Path, folder: Path) -> tuple[Path, Path]:
    """(config, run folder) of a finished `rcnn run` of ``RUN_CONFIG`` on ``data`` in ``folder``."""
    run = folder / "run"
    config = folder / "config.toml"
    config.write_text(RUN_CONFIG.format(data=data, run=run), encoding="utf-8")
    result = rcnn("run", config)
    assert result.exit_code == 0, result.output
    return config, run


def killed(target: str, times: int, *args, settings: tuple[str, ...] = ()) -> None:
    """Run ``rcnn ARGS`` in a subprocess that is SIGKILLed once ``target`` has returned ``times`` times
    (``tests.kill_midway``)."""
    command = [sys.executable, "-m", "tests.kill_midway", target, str(times), *settings, "--"]
    done = subprocess.run([*command, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr


def rcnn(*args):
    """Run ``rcnn ARGS...`` in this process; the result has ``exit_code`` and ``output``."""
    return CliRunner().invoke(app, [str(a) for a in args])


def run_steps(run: Path, *steps: tuple) -> str:
    """Run each ``rcnn`` step on ``run``, asserting it succeeds; the last step's output."""
    output = ""
    for step in steps:
        result = rcnn(*step, "--run", run)
        assert result.exit_code == 0, (step, result.output)
        output = result.output
    return output


def assert_one_line_error(result, *fragments: str, code: int = 2) -> None:
    """The command failed with ``code`` and one line holding every fragment, no traceback."""
    assert result.exit_code == code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def write_image(path: Path, height: int = 60, width: int = 80, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    cv2.imwrite(str(path), image)


def voc_object(name: str, box: tuple, difficult: str | None = "0", truncated: str | None = None) -> str:
    diff = "" if difficult is None else f"<difficult>{difficult}</difficult>"
    cut = "" if truncated is None else f"<truncated>{truncated}</truncated>"
    xmin, ymin, xmax, ymax = box
    return (
        f"<object><name>{name}</name>{cut}{diff}<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
        f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>"
    )


def voc_xml(objects: list[str], width: int | None = 80, height: int | None = 60, filename: str = "") -> str:
    size = "" if width is None else f"<size><width>{width}</width><height>{height}</height></size>"
    name = f"<filename>{filename}</filename>" if filename else ""
    return f"<annotation>{name}{size}{''.join(objects)}</annotation>"


def make_voc(root: Path, annotations: dict[str, str | None], split: str = "train") -> Path:
    """A VOC-layout dataset: image id -> annotation XML text (None: no XML file). Images are 80x60."""
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    (root / "Annotations").mkdir(exist_ok=True)
    for k, (image_id, xml) in enumerate(annotations.items()):
        write_image(root / "JPEGImages" / f"{image_id}.jpg", seed=k)
        if xml is not None:
            (root / "Annotations" / f"{image_id}.xml").write_text(xml)
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(annotations) + "\n")
    return root


def write_cache(
    path: Path,
    images: list[tuple[LabelledRegions, np.ndarray, np.ndarray]],
    stamp=None,
    compression: str = "lzf",
) -> Path:
    """A finished feature cache of classes a and b: each image's regions, fc7 and pool5."""
    dims = {"fc7": images[0][1].shape[1], "pool5": images[0][2].shape[1]}
    ids = [str(i) for i in range(len(images))]
    writer = CacheWriter(path, stamp or {"test": 1}, ["a", "b"], dims, "float32", ids, compression)
    for i, (regions, fc7, pool5) in enumerate(images[writer.images_done :], start=writer.images_done):
        writer.append(str(i), regions, {"fc7": fc7, "pool5": pool5})
    return writer.finish({})


def separable_images(num_images=12, per_image=300, seed=0):
    """Class a's regions sit near +e0, b's near +e1, background near -e0 - e1: linearly separable."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(num_images):
        gt = np.array([1, 2])
        labels = np.concatenate([gt, np.zeros(per_image, np.int64)])
        class_iou = np.zeros((len(labels), 2), np.float32)
        class_iou[0, 0] = class_iou[1, 1] = 1.0
        class_iou[2:5, 0] = 0.6  # near-duplicates of the a object: ignored by a's SVM
        fc7 = rng.normal(0, 0.3, (len(labels), 8)).astype(np.float32)
        fc7[0, 0] += 3
        fc7[1, 1] += 3
        fc7[2:5, 0] += 3
        fc7[5:, :2] -= 1
        boxes = rng.uniform(0, 50, (len(labels), 4)).astype(np.float32)
        boxes[:, 2:] += boxes[:, :2] + 5
        regions = LabelledRegions(boxes, labels, class_iou, boxes.copy())
        images.append((regions, fc7, fc7[:, :4].copy()))
    return images


def detections(rows) -> Detections:
    """rows: (image_id, class, score, [x1, y1, x2, y2]) in toolkit pixels."""
    ids, classes, scores, boxes = zip(*rows, strict=True) if rows else ((), (), (), ())
    return Detections(
        np.array(ids, dtype=object),
        np.array(classes, dtype=object),
        np.array(scores, dtype=np.float64),
        np.array(boxes, np.float32).reshape(-1, 4),
    )
