"""The report page: one self-contained HTML file of one or more run folders, built here from a hand-made
run (evaluations, detections, logs, manifests and a grid picture), no training needed."""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from stages.core.atomic import write_json
from stages.datasets.formats import load_dataset
from stages.detections.files import Detections, write_detections
from stages.evaluation.bootstrap import bootstrap_intervals
from stages.evaluation.metrics import evaluate
from stages.methods import METHODS
from stages.proposals.propose import write_proposals
from stages.report.page import write_report_page
from stages.runs.layout import RunLayout, write_manifest
from tests.helpers import make_voc, rcnn, voc_object, voc_xml

CAT = "big & cat"
"""A class name that must be escaped in the page."""

PAPER = """
[data]
root = "{root}"
[run]
folder = "x"
methods = ["rcnn", "spp", "fast"]
[fast.paper]
map = 0.669
test_seconds_per_image = 0.32
training_hours = 9.5
source = "Fast R-CNN, table 4, VGG16"
[fast.compress.paper]
map = 0.666
source = "Fast R-CNN, table 4, VGG16 with truncated SVD"
"""


def _write_evaluation(run: RunLayout, method: str, dataset, shift: float, compressed: bool = False) -> None:
    """A method's detections of the test split (each object found, boxes moved by ``shift`` px, and one
    false positive), their evaluation results JSON and its manifest, as ``rcnn evaluate --run`` writes."""
    ids, classes, boxes = [], [], []
    for record in dataset.images:
        for box, label in zip(record.boxes, record.labels, strict=True):
            ids.append(record.image_id)
            classes.append(dataset.classes[label - 1])
            boxes.append(box + shift)
    ids.append(dataset.images[0].image_id)
    classes.append("dog")
    boxes.append(np.array([0, 0, 8, 8], dtype=np.float32))
    scores = np.linspace(0.9, 0.5, len(ids))
    detections = Detections(
        np.array(ids, dtype=object), np.array(classes, dtype=object), scores, np.stack(boxes)
    )
    files = METHODS[method].files(run)
    variant = "svd" if compressed else ""
    write_detections(files.detections("test", variant), detections)
    results = files.results("test", variant)
    evaluation = evaluate(dataset, detections)
    intervals = bootstrap_intervals(evaluation, samples=50)
    assert intervals is not None
    write_json(
        results,
        {
            **evaluation.to_json(),
            "method": method,
            "compressed": compressed,
            "split": "test",
            "box_regression": True,
            "map_without_box_regression": round(evaluation.map - 0.01, 6),
            **intervals.to_json(),
            "seconds_per_image": 0.05 if compressed else 0.08,
        },
    )
    write_manifest(results, stage="evaluate", options={"method": method}, inputs=[], seconds=1.5)


@pytest.fixture()
def dataset_root(tmp_path) -> Path:
    """A two-image VOC test split of the classes "big & cat" and "dog"."""
    cat = voc_object("big &amp; cat", (5, 5, 30, 30))
    objects = {
        "im1": voc_xml([cat, voc_object("dog", (40, 10, 70, 50))]),
        "im2": voc_xml([voc_object("dog", (10, 10, 40, 40))]),
    }
    return make_voc(tmp_path / "data", objects, split="test")


@pytest.fixture()
def run_folder(tmp_path, dataset_root) -> Path:
    """A finished run of R-CNN and Fast R-CNN (and its SVD model) on ``dataset_root``'s test split."""
    run = RunLayout(tmp_path / "run")
    dataset = load_dataset(dataset_root, "test")
    boxes = {r.image_id: np.zeros((0, 4), np.float32) for r in dataset.images}
    attrs = {"dataset_root": str(dataset.root), "dataset_format": dataset.format}
    write_proposals(run.proposals("test"), dataset.images, boxes, attrs)
    write_manifest(run.proposals("test"), stage="propose", options={}, inputs=[dataset.source], seconds=2.0)
    _write_evaluation(run, "rcnn", dataset, shift=1.0)
    _write_evaluation(run, "fast", dataset, shift=0.0)
    _write_evaluation(run, "fast", dataset, shift=2.0, compressed=True)
    logs = {
        run.pretrain.log: "iteration,lr,loss,accuracy\n10,0.01,2.3,0.2\n20,0.01,1.1,0.6\n",
        run.method("rcnn").finetune.log: "iteration,lr,loss,accuracy\n10,0.001,1.3,0.7\n20,0.001,0.5,0.8\n",
        run.method("fast").finetune.log: (
            "iteration,lr,loss,cls_loss,box_loss,accuracy\n10,0.01,1.8,1.4,0.4,0.7\n20,0.01,1.2,0.9,0.3,0.8\n"
        ),
    }
    for path, text in logs.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    grid = run.method("fast").detect / "grid.png"
    grid.parent.mkdir(parents=True)
    cv2.imwrite(str(grid), np.full((40, 60, 3), 127, dtype=np.uint8))
    return run.root


def _pictures(page: str) -> list[bytes]:
    """The PNGs embedded in ``page``, decoded."""
    return [base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_the_page_is_one_self_contained_file(run_folder, tmp_path):
    target = write_report_page([RunLayout(run_folder)], tmp_path / "out" / "page.html")
    assert target == tmp_path / "out" / "page.html"
    assert [p.name for p in target.parent.iterdir()] == ["page.html"]  # no temporary file left
    page = target.read_text(encoding="utf-8")
    for external in ('src="http', 'href="http', "<link", "<script", "url("):
        assert external not in page
    pictures = _pictures(page)
    # accuracy against time, PR curves, training curves, the grid, stage times
    assert len(pictures) == 5 and all(p.startswith(b"\x89PNG\r\n\x1a\n") for p in pictures)
    for name in ("big &amp; cat", "dog"):
        assert f"<td>{name}</td>" in page  # a row of the per-class AP table
    assert CAT not in page  # escaped wherever it is written
    for label in ("R-CNN", "Fast R-CNN", "Fast R-CNN + SVD"):
        assert f"{label}</th>" in page
    assert "left out" not in page  # the PR curves were scored again from the detections
    assert "paper mAP" not in page and "table 4" not in page
    fast = json.loads(RunLayout(run_folder).method("fast").results("test").read_text())
    low, high = fast["map_ci95"]
    assert f'<td class="num">{low:.3f} to {high:.3f}</td>' in page and "by bootstrap over the test" in page


def test_paper_figures_from_the_runs_config(run_folder, dataset_root, tmp_path):
    (run_folder / "config.toml").write_text(PAPER.format(root=dataset_root.as_posix()))
    page = write_report_page([RunLayout(run_folder)], tmp_path / "page.html").read_text()
    assert "paper mAP" in page and "paper test s/image" in page
    assert ">0.669<" in page and ">0.32<" in page and ">9.5 h<" in page  # Fast R-CNN's
    assert ">0.666<" in page  # the compressed model's, on the + SVD row
    assert 'title="Fast R-CNN, table 4, VGG16"' in page
    assert "Fast R-CNN, table 4, VGG16 with truncated SVD</li>" in page


def test_a_config_that_does_not_load_shows_no_paper_figures(run_folder, tmp_path):
    (run_folder / "config.toml").write_text('[run]\nmethods = ["yolo"]\n[fast.paper]\nmap = 0.669\n')
    page = write_report_page([RunLayout(run_folder)], tmp_path / "page.html").read_text()
    assert "paper mAP" not in page and "0.669" not in page
    assert "<td>dog</td>" in page


def test_report_compares_runs_on_one_page(run_folder, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(run_folder, other)
    target = tmp_path / "compare.html"
    result = rcnn("report", "--run", run_folder, "--run", other, "--html", target)
    assert result.exit_code == 0, result.output
    assert result.output.count("results:") == 2 and f"page: {target}" in result.output.replace("\n", "")
    page = target.read_text()
    assert f"<td>{run_folder}</td>" in page and f"<td>{other}</td>" in page  # the results table's run column
    assert f">{run_folder}</th>" in page and f">{other}</th>" in page  # the per-class table's column groups


def test_without_the_dataset_the_pr_curves_are_left_out_with_a_note(run_folder, dataset_root):
    shutil.rmtree(dataset_root)
    result = rcnn("report", "--run", run_folder)
    assert result.exit_code == 0, result.output
    page = (run_folder / "report.html").read_text()  # the default place
    assert "PR curves of split" in page and "left out" in page and "not found" in page
    assert "<td>dog</td>" in page and len(_pictures(page)) == 4
