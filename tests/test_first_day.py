"""A new user's first day on real data, on the command line: a dataset like the aerial tree photos that a
trial met (one class in trainval; the test split's "alive" and "dead" trees in no trainval image;
proposals that miss), each surprise of that day now said where it happens, and every hint a command that
runs as printed."""

from __future__ import annotations

import itertools
import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
import typer.main

from rcnn_cli.app import app
from stages.runs.layout import RunLayout
from tests.helpers import assert_one_line_error, rcnn

TREES = """
[data]
root = "{data}"

[run]
folder = "{run}"
methods = ["fast"]

[propose]
workers = 1
max_side = 160
max_boxes = 4

[pretrain]
iterations = 20
batch_size = 16
checkpoint_every = 10

[fast.finetune]
iterations = 4
checkpoint_every = 2

[fast.finetune.sampling]
scales = [96]
"""
"""A run of Fast R-CNN that proposals of four boxes an image starve."""


@pytest.fixture(scope="module")
def trees(tiny_demo, tmp_path_factory) -> Path:
    """The tiny demo as the tree photos were: every trainval object a "tree"; the test split's objects
    trees, "alive" and "dead" in turn, the last two in no trainval image."""
    root = tmp_path_factory.mktemp("trees") / "voc"
    shutil.copytree(tiny_demo, root)
    tested = set((root / "ImageSets" / "Main" / "test.txt").read_text().split())
    for xml in (root / "Annotations").glob("*.xml"):
        names = itertools.cycle(("tree", "alive", "dead") if xml.stem in tested else ("tree",))
        parts = re.split(r"<name>[^<]*</name>", xml.read_text())
        xml.write_text(parts[0] + "".join(f"<name>{next(names)}</name>{part}" for part in parts[1:]))
    return root


def test_a_run_on_trees_says_what_cannot_work_before_and_in_the_report(trees, tmp_path):
    run = tmp_path / "run"
    config = tmp_path / "trees.toml"
    config.write_text(TREES.format(data=trees, run=run))
    result = rcnn("run", config)
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())  # warnings are long lines
    for name in ("alive", "dead"):
        assert f"class '{name}' has no object to train on in split 'trainval'" in output
    assert re.search(r"the proposals of split 'trainval' find [\d.]+% of its objects at IoU 0.5", output)
    assert "--max-boxes 8" in output and "docs/your-own-data.md" in output
    assert re.search(r"done propose test \([\d.]+ s\): 3 images, 4 boxes an image, recall [\d.]+", output)
    assert "pre-training tells the one class of split 'trainval' (tree) from" in output
    assert "Fast R-CNN learnt nothing of alive, dead" in output
    results = json.loads(RunLayout(run).method("fast").results("test").read_text())
    assert results["untrained_classes"] == ["alive", "dead"]
    assert results["map"] == pytest.approx(results["ap"]["tree"], abs=1e-6)  # the mAP of what was taught
    report = rcnn("report", "--run", run)
    assert report.exit_code == 0, report.output
    assert re.search(r"trainval +selective search \(fast\) +5 +4 +0\.\d+", report.output), report.output
    page = (run / "report.html").read_text()
    assert 'id="proposals"' in page and 'class="low"' in page and "(not trained: not in the mAP)" in page


def test_a_check_across_splits_warns_of_classes_without_training_objects(trees):
    result = rcnn("data", "check", "--data", trees, "--split", "trainval", "--split", "test")
    assert result.exit_code == 0, result.output
    assert result.output.count("warning: class") == 2 and "no problems found" in result.output


def test_splits_that_number_their_classes_apart_are_caught_before_any_training(trees, tmp_path):
    """COCO files as a converter writes them: each split's categories those it has, numbered from 1."""
    coco = tmp_path / "coco"
    for split in ("trainval", "test"):
        result = rcnn("data", "convert", "--data", trees, "--split", split, "--to", "coco", "--out", coco)
        assert result.exit_code == 0, result.output
    train_file = coco / "annotations" / "instances_trainval.json"
    content = json.loads(train_file.read_text())
    tree = next(c["id"] for c in content["categories"] if c["name"] == "tree")
    content["categories"] = [{"id": 1, "name": "tree"}]
    for annotation in content["annotations"]:
        assert annotation["category_id"] == tree
        annotation["category_id"] = 1
    train_file.write_text(json.dumps(content))
    result = rcnn("data", "check", "--data", coco, "--split", "trainval", "--split", "test")
    assert result.exit_code == 2
    assert "have different classes (trainval: tree; test: alive, dead, tree)" in result.output
    config = tmp_path / "trees.toml"
    config.write_text(TREES.format(data=coco, run=tmp_path / "run"))
    result = rcnn("run", config, "--plan")
    assert_one_line_error(result, str(train_file), "instances_test.json", "--classes", "[data] classes")
    result = rcnn("run", config, "--plan", "--classes", "tree")
    assert result.exit_code == 0 and "…" not in result.output, result.output  # paths whole, not cut
    assert not (tmp_path / "run").exists()  # a plan makes nothing


def _parsed(command: str) -> dict:
    """The options of ``command`` ("rcnn ...") as the command line parses them; raises as it would."""
    words = shlex.split(command)
    assert words[0] == "rcnn", command
    group = typer.main.get_command(app)
    context = group.make_context("rcnn", words[1:])
    while isinstance(group, typer.core.TyperGroup):
        name, *rest = [*context._protected_args, *context.args]
        group, context = group.get_command(context, name), context
        context = group.make_context(name, rest, parent=context)
    return context.params


def test_every_hint_names_a_command_that_parses_as_printed(tiny_run, tmp_path):
    """The commands that hints print for each artifact of a run: they parse, and those that read a
    dataset name the one the run's proposals were made from."""
    data, base = tiny_run
    run = RunLayout(tmp_path / "run")
    shutil.copytree(base, run.root)
    (run.root / "backbone.pt").unlink()
    test = ("--data", data, "--split", "test", "--run", run)
    failing = {
        ("finetune", "--data", data, "--run", run): "rcnn pretrain",
        ("evaluate", *test, "--method", "fast"): "rcnn finetune",
        ("evaluate", *test, "--method", "rcnn"): "rcnn extract-features",
        ("train-svm", "--method", "spp", "--run", run): "rcnn extract-features",
        ("compress", "--run", run): "rcnn finetune",
        ("detect", data / "JPEGImages" / "000000.jpg", "--run", run): "rcnn finetune",
        ("export", "--run", run, "--split", "test", "--format", "voc", "--out", tmp_path): "rcnn evaluate",
    }
    for args, command in failing.items():
        result = rcnn(*args)
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        hint = re.search(r"`(rcnn [^`]+)`", result.output)
        assert hint and hint.group(1).startswith(command), result.output
        assert Path(_parsed(hint.group(1)).get("data", data)) == data
    files = run.method("spp")
    for artifact in (files.features("val"), files.bbox, run.method("fast").results("test", "svd")):
        _parsed(run.command_for(artifact))
