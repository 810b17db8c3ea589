"""Pre-training on a split whose objects are all of one class: its background crops, checked against a
slow, obvious IoU, and a classifier that has something to learn."""

from __future__ import annotations

import json

import numpy as np

from stages.datasets.formats import load_dataset
from stages.runs.layout import RunLayout, manifest_path
from stages.training.pretrain import BACKGROUND_IOU, background_crops
from tests.helpers import rcnn


def iou(a, b) -> float:
    """The overlap of two (x1, y1, x2, y2) boxes over their union, written out."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def test_background_crops_overlap_no_object_and_take_the_objects_sizes(tiny_demo):
    dataset = load_dataset(tiny_demo, "trainval")
    objects = np.concatenate([r.boxes[~r.difficult] for r in dataset.images])
    index, crops = background_crops(dataset, objects, seed=0)
    assert len(crops) > 0 and len(index) == len(crops)
    sizes = {tuple(np.round(size, 3)) for size in objects[:, 2:] - objects[:, :2]}
    for k, record in enumerate(dataset.images):
        mine = crops[index == k]
        assert len(mine) <= int((~record.difficult).sum())
        for crop in mine:
            assert crop[0] >= 0 and crop[2] <= record.width and crop[1] >= 0 and crop[3] <= record.height
            assert all(iou(crop, box) < BACKGROUND_IOU for box in record.boxes)  # difficult ones too
            size = tuple(np.round(crop[2:] - crop[:2], 3))
            assert size in sizes or size[0] == record.width or size[1] == record.height
    np.testing.assert_array_equal(background_crops(dataset, objects, seed=0)[1], crops)  # seeded


def test_pretraining_on_one_class_tells_it_from_background(tiny_demo, tmp_path):
    run = RunLayout(tmp_path / "run")
    result = rcnn(
        "pretrain", "--data", tiny_demo, "--run", run.root, "--classes", "disc",
        "--iterations", "20", "--batch-size", "16", "--checkpoint-every", "10",
    )  # fmt: skip
    assert result.exit_code == 0 and "background crops" in result.output, result.output
    manifest = json.loads(manifest_path(run.pretrain.model).read_text())
    found = manifest["results"]
    assert found["background_crops"] > 0 and found["class_objects"] == {"disc": found["objects"]}
    assert found["final_loss"] > 1e-6  # a one-way classifier's loss is 0 from the first iteration
