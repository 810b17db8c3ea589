"""`rcnn export`: the detections that `rcnn evaluate` and `rcnn run` write, as a COCO results file that
pycocotools loads with the dataset's own ids, and as the VOC devkit's comp4 files, read back by the
devkit's rules. Every input is made by the commands a user runs, never by hand."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import numpy as np
import pytest

from stages.core.geometry import voc_to_boxes
from stages.datasets.demo import generate_demo
from stages.datasets.formats import load_dataset
from stages.detections.files import read_detections
from stages.evaluation.metrics import evaluate
from stages.runs.layout import RunLayout
from tests.helpers import TINY, assert_one_line_error, rcnn


@pytest.fixture(scope="module")
def evaluated_on_coco(made, tmp_path_factory):
    """(COCO-layout tiny demo, a run whose Fast R-CNN detected its test split with `rcnn evaluate`): the
    network of the finished `rcnn run`, proposals and detections made on the COCO copy of its data."""
    base = tmp_path_factory.mktemp("export")
    data = generate_demo(base / "coco", TINY, layout="coco")
    run = base / "run"
    shutil.copytree(made[1], run)
    on = ("--data", data, "--split", "test", "--run", run)
    propose = ("propose", *on, "--workers", "1", "--max-side", "160")
    for step in (propose, ("evaluate", *on, "--method", "fast")):
        result = rcnn(*step)
        assert result.exit_code == 0, result.output
    return data, RunLayout(run)


def test_a_coco_results_file_of_rcnn_evaluate_loads_and_scores_as_ours(evaluated_on_coco, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    data, run = evaluated_on_coco
    out = tmp_path / "fast-test.json"
    result = rcnn("export", "--run", run.root, "--split", "test", "--format", "COCO", "--out", out)
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
    detections = read_detections(run.method("fast").detections("test"))
    assert len(rows) == len(detections) > 0
    ours = evaluate(load_dataset(data, "test"), detections)
    assert evaluator.stats[0] == pytest.approx(ours.map, abs=1e-6)


def test_voc_result_files_of_rcnn_run_read_back_by_the_devkits_rules(made, tiny_demo, tmp_path):
    _, run = made
    for method in ("rcnn", "spp", "fast"):
        out = tmp_path / method
        on = ("--run", run, "--method", method, "--split", "test")
        result = rcnn("export", *on, "--format", "voc", "--out", out)
        assert result.exit_code == 0, result.output
        detections = read_detections(RunLayout(run).method(method).detections("test"))
        read = []
        for name in load_dataset(tiny_demo, "test").classes:
            for line in (out / f"comp4_det_test_{name}.txt").read_text().splitlines():
                image_id, score, *voc_box = line.split()  # the devkit: textscan '%s %f %f %f %f %f'
                box = voc_to_boxes(np.array([float(v) for v in voc_box]))[0]
                read.append((image_id, name, float(score), box))
        assert len(read) == len(detections) > 0
        columns = (detections.image_ids, detections.classes, detections.scores, detections.boxes)
        key = lambda d: (d[0], d[1], -d[2])  # noqa: E731
        for got, want in zip(sorted(read, key=key), sorted(zip(*columns, strict=True), key=key), strict=True):
            assert got[:2] == want[:2] and got[2] == pytest.approx(want[2], abs=1e-6)
            np.testing.assert_allclose(got[3], want[3], atol=0.005)


def test_export_names_the_command_that_makes_the_detections_and_it_runs_as_printed(made, tmp_path):
    """Without the SVD model's detections, export names the command that makes them; run as printed, it
    makes them, and the export works."""
    run = tmp_path / "run"
    shutil.copytree(made[1], run)
    svd = RunLayout(run).method("fast").detections("test", "svd")
    svd.unlink()
    out = tmp_path / "svd.json"
    export = ("export", "--run", run, "--split", "test", "--format", "coco", "--out", out, "--compressed")
    result = rcnn(*export)
    assert_one_line_error(result, str(svd), "rcnn evaluate --data")
    hint = result.output.split("`")[1].split()
    assert rcnn(*hint[1:]).exit_code == 0
    result = rcnn(*export)
    assert result.exit_code == 0 and json.loads(out.read_text()), result.output
