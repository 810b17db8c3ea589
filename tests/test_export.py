"""`rcnn export`: a method's detections as a COCO results file that pycocotools loads, with the dataset's
own ids, and as the VOC devkit's comp4 files, read back by the devkit's rules."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from stages.datasets.demo import generate_demo
from stages.datasets.formats import load_dataset
from stages.detections import Detections, write_detections
from stages.evaluation import evaluate
from stages.geometry import voc_to_boxes
from stages.proposals import write_proposals
from stages.runs import RunLayout, write_manifest
from tests.helpers import TINY, rcnn


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """(COCO-layout tiny demo, a run whose Fast R-CNN "detected" its test split: the objects, moved
    a little, and the detections)."""
    base = tmp_path_factory.mktemp("export")
    data = generate_demo(base / "coco", TINY, layout="coco")
    dataset = load_dataset(data, "test")
    run = RunLayout(base / "run")
    proposals = {r.image_id: r.boxes for r in dataset.images}
    write_proposals(
        run.proposals("test"),
        dataset.images,
        proposals,
        {"dataset_root": str(data), "dataset_format": "coco"},
    )
    rng = np.random.default_rng(0)
    boxes = np.concatenate([r.boxes for r in dataset.images]) + rng.normal(
        0, 2, (sum(len(r.labels) for r in dataset.images), 4)
    )
    detections = Detections(
        np.array([r.image_id for r in dataset.images for _ in r.labels]),
        np.array([dataset.classes[label - 1] for r in dataset.images for label in r.labels]),
        rng.random(len(boxes)),
        boxes.astype(np.float32),
    )
    target = run.method("fast").detections("test")
    write_detections(target, detections)
    write_manifest(target, stage="evaluate", options={}, inputs=[], seconds=0.0)
    return data, run, detections


def test_a_coco_results_file_loads_and_scores_as_the_toolkit_does(evaluated, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    data, run, detections = evaluated
    out = tmp_path / "fast-test.json"
    result = rcnn("export", "--run", run.root, "--split", "test", "--format", "coco", "--out", out)
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())
    truth_file = data / "annotations" / "instances_test.json"
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(truth_file))
        evaluator = COCOeval(truth, truth.loadRes(str(out)), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    content = json.loads(truth_file.read_text())
    assert {r["image_id"] for r in rows} <= {i["id"] for i in content["images"]}
    assert {r["category_id"] for r in rows} <= {c["id"] for c in content["categories"]}
    ours = evaluate(load_dataset(data, "test"), detections)
    assert evaluator.stats[0] == pytest.approx(ours.map, abs=1e-6)


def test_voc_result_files_read_back_by_the_devkits_rules(evaluated, tmp_path):
    data, run, detections = evaluated
    result = rcnn("export", "--run", run.root, "--split", "test", "--format", "voc", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    dataset = load_dataset(data, "test")
    read = []
    for name in dataset.classes:
        for line in (tmp_path / f"comp4_det_test_{name}.txt").read_text().splitlines():
            image_id, score, *voc_box = line.split()  # the devkit: textscan '%s %f %f %f %f %f'
            read.append(
                (image_id, name, float(score), voc_to_boxes(np.array([float(v) for v in voc_box]))[0])
            )
    assert len(read) == len(detections)
    order = sorted(range(len(read)), key=lambda i: (read[i][0], read[i][1], -read[i][2]))
    expected = sorted(
        zip(detections.image_ids, detections.classes, detections.scores, detections.boxes, strict=True),
        key=lambda d: (d[0], d[1], -d[2]),
    )
    for i, (image_id, name, score, box) in zip(order, expected, strict=True):
        assert read[i][:2] == (image_id, name) and read[i][2] == pytest.approx(score, abs=1e-6)
        np.testing.assert_allclose(read[i][3], box, atol=0.005)


def test_export_names_the_command_that_makes_the_detections(evaluated, tmp_path):
    _, run, _ = evaluated
    result = rcnn(
        "export",
        "--run",
        run.root,
        "--method",
        "rcnn",
        "--split",
        "test",
        "--format",
        "coco",
        "--out",
        tmp_path / "x.json",
    )
    assert result.exit_code == 2 and "rcnn evaluate --run" in result.output
