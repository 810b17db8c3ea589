"""Faster R-CNN on the command line, on the tiny dataset: training (resumed), compression, evaluation with
and without SVD, detection without selective search, report; its RPN's proposals read by Fast R-CNN."""

import csv
import json
import re
import shutil

import cv2
import numpy as np
import pytest

from stages.detections.files import read_detections
from stages.report.summary import report
from stages.runs.layout import RunLayout
from tests.helpers import assert_one_line_error, rcnn, run_steps

pytestmark = pytest.mark.slow  # a whole chain: `make test-quick` leaves it out


def test_the_faster_rcnn_chain_learns_its_training_split(tiny_run, tmp_path, monkeypatch):
    data, base = tiny_run
    run = tmp_path / "run"
    shutil.copytree(base, run)
    shutil.rmtree(run / "proposals")  # Faster R-CNN reads none
    files = RunLayout(run).method("faster")
    train = ("finetune", "--method", "faster", "--data", data, "--run", run, "--scales", "192")
    train = (*train, "--anchor-sizes", "16,32,64", "--learning-rate", "0.01", "--step", "250")
    result = rcnn(*train, "--checkpoint-every", "20", "--iterations", "40")
    assert result.exit_code == 0, result.output
    result = rcnn(*train, "--checkpoint-every", "20", "--iterations", "300")  # continues at iteration 40
    assert result.exit_code == 0 and "fine-tuned (faster, 1 process)" in result.output, result.output
    with open(files.finetune.log) as rows:
        log = list(csv.DictReader(rows))
    assert [int(row["iteration"]) for row in log] == list(range(20, 301, 20))
    assert {"loss", "rpn_cls_loss", "rpn_box_loss", "cls_loss", "box_loss", "accuracy"} <= set(log[0])
    assert float(log[-1]["rpn_cls_loss"]) < float(log[0]["rpn_cls_loss"])
    result = rcnn("compress", "--method", "faster", "--run", run)
    assert result.exit_code == 0 and "128, 32" in result.output, result.output

    # the RPN's recall beside selective search's, on the same images
    bench = ("bench", "proposals", "--data", data, "--run", run, "--images", "2", "--mode", "single")
    result = rcnn(*bench, "--max-side", "100")
    assert result.exit_code == 0 and "proposal recall" in result.output, result.output
    assert re.search(r"^selective search \(single\) +[\d.]+ ", result.output, re.M), result.output
    learned = re.search(r"^RPN \(Faster R-CNN\) +[\d.]+ +\d+ +[01]\.\d{3} ", result.output, re.M)
    assert learned is not None, result.output

    def no_selective_search(*args, **kwargs):
        raise AssertionError("Faster R-CNN ran selective search")

    monkeypatch.setattr("stages.proposals.propose.search_many", no_selective_search)
    on = ("--method", "faster", "--data", data)
    output = run_steps(
        run,
        ("evaluate", *on, "--split", "trainval"),
        ("evaluate", *on, "--split", "test"),
        ("evaluate", *on, "--split", "trainval", "--compressed"),
    )
    assert "mAP (voc07)" in output
    fitted = json.loads(files.results("trainval").read_text())
    plain = json.loads(files.results("test").read_text())
    svd = json.loads(files.results("trainval", "svd").read_text())
    assert fitted["map"] > 0.25 and not plain["compressed"] and svd["compressed"], fitted["map"]
    assert fitted["map"] - 0.15 <= svd["map"] <= fitted["map"] + 0.05, (fitted["map"], svd["map"])
    for part in ("conv", "proposals", "fc"):
        assert plain[f"{part}_seconds_per_image"] > 0, part
    assert plain["map_ci95"][0] <= plain["map"] <= plain["map_ci95"][1]  # over the test images
    recall = plain["proposal_recall"]  # the RPN's 2,000 best an image, of which the head scored 300
    assert 300 < recall["boxes_per_image"] <= 2000 and set(recall["recall"]) == {"300", "1000", "2000", "all"}
    assert recall["recall"]["300"] <= recall["recall"]["2000"] == recall["recall"]["all"]
    assert "its proposals find" in output
    images = sorted((data / "JPEGImages").glob("*.jpg"))[:2]
    out = tmp_path / "out"
    result = rcnn("detect", *images, "--method", "faster", "--run", run, "--out", out, "--score-thresh", 0)
    assert result.exit_code == 0 and "from 300 proposals" in result.output, result.output
    assert 0 < len(read_detections(out / f"{images[0].stem}.json")) <= 100
    # images smaller than the backbone's stride once scaled: a 4 x 5 image grows to the test scale; a
    # 1 x 900 one stays a line a pixel tall, whose conv5 has no anchor inside it
    small, line = tmp_path / "small.png", tmp_path / "line.png"
    cv2.imwrite(str(small), np.full((4, 5, 3), 128, np.uint8))
    cv2.imwrite(str(line), np.full((1, 900, 3), 128, np.uint8))
    result = rcnn("detect", small, line, "--method", "faster", "--run", run, "--out", out)
    said = " ".join(result.output.split())  # as printed, wrapped to the terminal
    assert result.exit_code == 0 and "line.png: 0 detections from 0 proposals" in said, result.output
    result = rcnn("report", "--run", run)
    assert result.exit_code == 0 and "Faster R-CNN + SVD" in result.output, result.output
    low, high = plain["map_ci95"]
    assert f"{low:.2f}-{high:.2f}" in result.output  # the interval the evaluation wrote
    assert "proposal recall" in result.output and "Faster R-CNN's own" in result.output
    found = report(RunLayout(run))
    tested = next(r for r in found.results if r.label == "Faster R-CNN" and r.split == "test")
    assert tested.test_seconds_with_proposals == plain["seconds_per_image"]
    assert tested.test_seconds_per_image == pytest.approx(
        plain["seconds_per_image"] - plain["proposals_seconds_per_image"]
    )
    # the trained RPN as another method's proposals (section 4.1), read by Fast R-CNN's training
    learned = tmp_path / "learned"
    shutil.copytree(base, learned)
    model = files.finetune.model
    propose = ("propose", "--data", data, "--run", learned, "--proposer", "rpn", "--max-boxes", "100")
    result = rcnn(*propose, "--split", "trainval", "--model", model)
    assert result.exit_code == 0 and "proposals:" in result.output, result.output
    manifest = json.loads((learned / "proposals" / "trainval.manifest.json").read_text())
    assert manifest["options"]["source"] == "rpn" and manifest["options"]["model"] == str(model)
    assert 0 < manifest["results"]["boxes_per_image"] <= 100 and manifest["results"]["recall"]["0.5"] > 0
    assert manifest["results"]["recall_curves"]["recall"]["all"][0] == pytest.approx(
        manifest["results"]["recall"]["0.5"]
    )
    result = rcnn("finetune", "--data", data, "--run", learned, "--scales", "96", "--iterations", "5")
    assert result.exit_code == 0 and "fine-tuned (fast" in result.output, result.output
    other = learned / "backbone.pt"
    assert_one_line_error(rcnn(*propose, "--split", "test", "--model", other), str(other), "not 'faster'")
    result = rcnn(*propose, "--split", "test")
    assert result.exit_code == 2 and "--model" in result.output
    result = rcnn(*propose, "--split", "test", "--model", model, "--import", tmp_path / "boxes.mat")
    assert result.exit_code == 2 and "--import" in result.output and "not a network" in result.output
