"""The command line through Typer's runner: help, the chain on a tiny dataset, and the error edge."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from rcnn_cli.app import app

runner = CliRunner()


def rcnn(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def evaluate_test_split(data, detections, *extra):
    return rcnn("evaluate", "--data", data, "--split", "test", "--detections", detections, *extra)


def test_version_and_help_with_examples():
    result = rcnn("--version")
    assert result.exit_code == 0 and result.output.startswith("rcnn ")
    for command in (["data", "demo"], ["data", "check"], ["propose"], ["evaluate"], ["bench", "proposals"]):
        result = rcnn(*command, "--help")
        assert result.exit_code == 0 and "Example" in result.output, command


def test_chain_on_the_tiny_dataset(tiny_demo, tmp_path):
    result = rcnn("data", "check", "--data", tiny_demo, "--split", "trainval")
    assert result.exit_code == 0 and "no problems found" in result.output
    run = tmp_path / "run"
    result = rcnn(
        "propose", "--data", tiny_demo, "--split", "test", "--run", run, "--workers", "1", "--max-side", "200"
    )
    assert result.exit_code == 0, result.output
    assert "recall@0.5" in result.output and (run / "proposals" / "test.h5").is_file()
    # Ground truth as detections scores a perfect mAP.
    from stages.voc import load_dataset

    dataset = load_dataset(tiny_demo, "test")
    dets = [
        {"image_id": r.image_id, "class": dataset.classes[label - 1], "score": 1.0, "box": box.tolist()}
        for r in dataset.images
        for box, label in zip(r.boxes, r.labels, strict=True)
    ]
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    result = evaluate_test_split(tiny_demo, tmp_path / "dets.json", "--out", tmp_path / "results.json")
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["metric"] == "voc07" and results["map"] == 1.0
    assert set(results["ap"]) == set(dataset.classes)
    assert (tmp_path / "results.pr.png").is_file()


def assert_one_line_error(result, *fragments: str, code: int = 2):
    assert result.exit_code == code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_user_errors_are_one_line_naming_the_file(tiny_demo, tmp_path):
    assert_one_line_error(
        rcnn("propose", "--data", tmp_path / "nowhere", "--split", "test"),
        "error:",
        "nowhere: dataset root not found",
    )
    assert_one_line_error(
        evaluate_test_split(tiny_demo, tmp_path / "missing.json"),
        "missing.json: file not found",
    )
    (tmp_path / "bad.json").write_text("[{]")
    (tmp_path / "results.json").write_text("earlier results")
    assert_one_line_error(
        evaluate_test_split(tiny_demo, tmp_path / "bad.json", "--out", tmp_path / "results.json"),
        "bad.json: not a JSON file",
    )
    assert (tmp_path / "results.json").read_text() == "earlier results"
    assert_one_line_error(
        rcnn("propose", "--data", tiny_demo, "--split", "nosuch"),
        "nosuch.txt: split file not found (available: test, train, trainval, val)",
    )
    (tmp_path / "afile").write_text("not a folder")
    assert_one_line_error(
        rcnn(
            "propose", "--data", tiny_demo, "--split", "test", "--run", tmp_path / "afile", "--workers", "1"
        ),
        "cannot write here",
    )
    (tmp_path / "mine").mkdir()
    assert_one_line_error(rcnn("data", "demo", "--out", tmp_path / "mine"), "mine: exists")


def test_check_lists_problems_and_exits_2(tiny_demo, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(tiny_demo, root)
    (root / "JPEGImages" / "000000.jpg").write_bytes(b"broken")
    (root / "Annotations" / "000001.xml").write_text("<annotation>")
    result = rcnn("data", "check", "--data", root, "--split", "train")
    assert result.exit_code == 2
    assert "2 problems" in result.output and "000000.jpg: unreadable image" in result.output
    assert "000001.xml: unreadable annotation" in result.output


def test_internal_errors_exit_1_and_debug_shows_the_traceback(tiny_demo, monkeypatch):
    import stages.voc

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(stages.voc, "check_dataset", broken)
    assert_one_line_error(
        rcnn("data", "check", "--data", tiny_demo), "internal error: RuntimeError: boom", "--debug", code=1
    )
    result = rcnn("--debug", "data", "check", "--data", tiny_demo)
    assert result.exit_code == 1 and "Traceback" in result.output and "boom" in result.output


@pytest.mark.parametrize("args", [["propose", "--data"], ["evaluate", "--metric"], ["nosuchcommand"]])
def test_usage_errors_exit_2(args):
    assert rcnn(*args).exit_code == 2
