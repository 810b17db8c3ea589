"""Shared fixtures: a tiny generated demo dataset and a writer of hand-made VOC datasets."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import settings

from stages.demo_data import DemoOptions, generate_demo

# No per-example deadline: the first example pays for importing torchvision (seconds).
settings.register_profile("rcnn", deadline=None)
settings.load_profile("rcnn")

TINY = DemoOptions(seed=7, num_train=3, num_val=2, num_test=3)


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> Path:
    """A tiny demo dataset (3 train, 2 val, 3 test images); read-only for the tests."""
    return generate_demo(tmp_path_factory.mktemp("data") / "demo", TINY)


@pytest.fixture(scope="session")
def tiny_run(tiny_demo, tmp_path_factory) -> tuple[Path, Path]:
    """(tiny dataset, a run folder with its proposals and a pre-trained tiny backbone); copy before use."""
    from typer.testing import CliRunner

    from rcnn_cli.app import app

    run = tmp_path_factory.mktemp("runs") / "base"
    steps = [
        ["propose", "--split", "trainval", "--workers", "1", "--max-side", "160"],
        ["propose", "--split", "test", "--workers", "1", "--max-side", "160"],
        ["pretrain", "--iterations", "3", "--batch-size", "8"],
    ]
    for step in steps:
        result = CliRunner().invoke(app, [*step, "--data", str(tiny_demo), "--run", str(run)])
        assert result.exit_code == 0, result.output
    return tiny_demo, run


def write_image(path: Path, height: int = 60, width: int = 80, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    cv2.imwrite(str(path), image)


def voc_object(name: str, box: tuple, difficult: str | None = "0") -> str:
    diff = "" if difficult is None else f"<difficult>{difficult}</difficult>"
    xmin, ymin, xmax, ymax = box
    return (
        f"<object><name>{name}</name>{diff}<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
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
