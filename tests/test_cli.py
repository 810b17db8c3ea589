"""The command line through Typer's runner: help, the chain on a tiny dataset, and the error edge."""

import json
import re
import shutil

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from rcnn_cli.app import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    """Tables as wide as they need, whatever the terminal running the tests (rich reads COLUMNS once)."""
    from rcnn_cli.console import err, out

    for console in (out, err):
        monkeypatch.setattr(console, "_width", 200)


def rcnn(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def evaluate_test_split(data, detections, *extra):
    return rcnn("evaluate", "--data", data, "--split", "test", "--detections", detections, *extra)


def test_version_and_help_with_examples():
    result = rcnn("--version")
    assert result.exit_code == 0 and result.output.startswith("rcnn ")
    commands = (
        ["data", "demo"], ["data", "check"], ["propose"], ["pretrain"], ["finetune"], ["extract-features"],
        ["train-svm"], ["train-bbox"], ["detect"], ["evaluate"], ["report"], ["bench", "proposals"],
        ["bench", "features"], ["bench", "svm-memory"],
    )  # fmt: skip
    for command in commands:
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


def test_the_whole_rcnn_chain_on_the_tiny_dataset(tiny_demo, tmp_path):
    """propose, pretrain, finetune, extract-features, train-svm, train-bbox, evaluate, detect, report."""
    run = tmp_path / "run"
    data = ("--data", tiny_demo)
    steps = [
        ("propose", *data, "--split", "trainval", "--workers", "1", "--max-side", "160"),
        ("propose", *data, "--split", "test", "--workers", "1", "--max-side", "160"),
        ("pretrain", *data, "--iterations", "3", "--batch-size", "8", "--checkpoint-every", "2"),
        ("finetune", "--method", "rcnn", *data, "--iterations", "3"),
        ("extract-features", "--method", "rcnn", *data, "--split", "trainval"),
        ("extract-features", "--method", "rcnn", *data, "--split", "test"),
        ("train-svm", "--method", "rcnn"),
        ("train-bbox", "--method", "rcnn"),
        ("evaluate", "--method", "rcnn", *data, "--split", "test"),
    ]
    for step in steps:
        result = rcnn(*step, "--run", run)
        assert result.exit_code == 0, (step, result.output)
    assert "mAP (voc07)" in result.output and "mAP without box regression" in result.output
    assert_extraction_resumes(tiny_demo, run)
    results = json.loads((run / "rcnn" / "eval" / "test.json").read_text())
    assert results["method"] == "rcnn" and results["box_regression"] is True
    assert 0 <= results["map"] <= 1 and (run / "rcnn" / "eval" / "test.pr.png").is_file()
    from stages.detections import read_detections

    assert len(read_detections(run / "rcnn" / "detections" / "test.json")) > 0
    image = next((tiny_demo / "JPEGImages").glob("*.jpg"))
    gray = tmp_path / "gray.png"  # a grayscale PNG works as well as a colour JPEG
    cv2.imwrite(str(gray), cv2.imread(str(image), cv2.IMREAD_GRAYSCALE))
    out = tmp_path / "out"
    result = rcnn(
        "detect", image, gray, "--run", run, "--method", "rcnn", "--out", out, "--score-thresh", "-100"
    )
    assert result.exit_code == 0, result.output
    for stem in (image.stem, "gray"):
        assert (out / f"{stem}.png").is_file() and len(read_detections(out / f"{stem}.json")) > 0
    assert_spp_chain(tiny_demo, run, tmp_path)
    result = rcnn("report", "--run", run)
    assert result.exit_code == 0 and "rcnn/features/trainval.h5" in result.output and "total" in result.output
    assert "spp/eval/test.json" in result.output


def assert_spp_chain(data, run, tmp_path):
    """SPP-net on the same run: pyramids, fc fine-tuning, pyramids with fc7, SVMs, regressors, evaluation."""
    import h5py

    scales = ("--scales", "96,160")
    steps = [
        ("extract-features", "--method", "spp", "--data", data, "--split", "trainval", *scales),
        ("finetune", "--method", "spp", "--data", data, "--iterations", "4", "--checkpoint-every", "2"),
        ("extract-features", "--method", "spp", "--data", data, "--split", "trainval", *scales),
        ("extract-features", "--method", "spp", "--data", data, "--split", "test", *scales),
        ("train-svm", "--method", "spp"),
        ("train-bbox", "--method", "spp"),
        ("evaluate", "--method", "spp", "--data", data, "--split", "test"),
    ]
    manifest = run / "spp" / "features" / "trainval.manifest.json"
    for number, step in enumerate(steps):
        result = rcnn(*step, "--run", run)
        assert result.exit_code == 0, (step, result.output)
        if number == 0:
            with h5py.File(run / "spp" / "features" / "trainval.h5") as h5:
                assert "pyramid" in h5 and "fc7" not in h5 and h5["pyramid"].shape[1] == 128 * 50
                pyramids = h5["pyramid"][:]
            pyramid_seconds = json.loads(manifest.read_text())["seconds"]
    assert_fc7_from_cached_pyramids(data, run, pyramids)
    # the fc7 pass extends the pyramid cache, and its manifest counts the time of both
    assert json.loads(manifest.read_text())["seconds"] > pyramid_seconds
    results = json.loads((run / "spp" / "eval" / "test.json").read_text())
    assert results["method"] == "spp" and 0 <= results["map"] <= 1
    image = next((data / "JPEGImages").glob("*.jpg"))
    out = tmp_path / "spp-out"
    result = rcnn("detect", image, "--run", run, "--method", "spp", "--out", out, "--score-thresh", "-100")
    assert result.exit_code == 0, result.output
    assert (out / f"{image.stem}.png").is_file()


def assert_fc7_from_cached_pyramids(data, run, pyramids):
    """After fine-tuning, trainval's fc7 comes from the pyramids cached before it (kept as they were),
    and equals fc7 computed from the image."""
    import h5py
    import torch

    from stages.images import read_image
    from stages.sppnet import SppExtractor, load_spp

    with h5py.File(run / "spp" / "features" / "trainval.h5") as h5:
        assert h5.attrs["with_fc7"] and json.loads(h5.attrs["feature_points"]) == ["pyramid", "fc7"]
        assert np.array_equal(h5["pyramid"][:], pyramids)
        image_id, rows = h5["image_ids"].asstr()[0], slice(*h5["offsets"][:2])
        boxes, stored = h5["boxes"][rows], h5["fc7"][rows].astype(np.float32)
    manifest = json.loads((run / "spp" / "features" / "trainval.manifest.json").read_text())
    assert manifest["results"]["images_computed"] == 0
    model, _, _ = load_spp(run)
    extractor = SppExtractor(model.net, (96, 160), 224, torch.device("cpu"), with_fc7=True)
    computed = extractor(read_image(data / "JPEGImages" / f"{image_id}.jpg"), boxes)["fc7"].numpy()
    np.testing.assert_allclose(stored, computed, rtol=0.01, atol=0.01 * np.abs(computed).max())


def test_sizes_that_are_not_integers_are_a_usage_error(tiny_demo, tmp_path):
    result = rcnn("extract-features", "--method", "spp", "--data", tiny_demo, "--split", "test",
                  "--scales", "688,big", "--run", tmp_path)  # fmt: skip
    assert result.exit_code == 2 and "--scales" in result.output and "Traceback" not in result.output


def test_stages_name_the_command_that_makes_a_missing_input(tiny_demo, tmp_path):
    run = tmp_path / "empty"
    result = rcnn("train-svm", "--method", "rcnn", "--run", run)
    assert_one_line_error(result, "rcnn/features/trainval.h5", "rcnn extract-features")
    result = rcnn("finetune", "--data", tiny_demo, "--run", run)
    assert_one_line_error(result, "backbone.pt", "rcnn pretrain")
    result = rcnn("evaluate", "--data", tiny_demo, "--split", "test")
    assert result.exit_code == 2 and "--detections" in result.output
    result = rcnn("detect", tiny_demo / "nope.jpg", "--run", run)
    assert result.exit_code == 2


def assert_extraction_resumes(data, run):
    """Interrupt feature extraction after one image; the rerun continues and gives the same file."""
    import h5py

    from stages.progress import Progress
    from stages.rcnn import extract_features
    from stages.voc import load_dataset

    class InterruptAfterOne(Progress):
        def task(self, description, total, unit="it"):
            import contextlib

            @contextlib.contextmanager
            def managed():
                def advance(n=1, **fields):
                    if fields:  # an image was written
                        raise KeyboardInterrupt

                yield advance

            return managed()

    cache = run / "rcnn" / "features" / "test.h5"
    with h5py.File(cache) as h5:
        expected = {name: h5[name][:] for name in ("fc7", "pool5", "boxes", "offsets")}
    cache.unlink()
    dataset = load_dataset(data, "test")
    with pytest.raises(KeyboardInterrupt):
        extract_features(dataset, run, progress=InterruptAfterOne())
    assert not cache.exists() and (cache.parent / ".test.h5.partial").exists()
    summary = extract_features(dataset, run)
    assert summary.computed == len(dataset) - 1
    with h5py.File(cache) as h5:
        for name, values in expected.items():
            np.testing.assert_array_equal(h5[name][:], values)


def test_bench_methods_times_the_lineage_beside_the_paper(tiny_demo):
    sizes = ("--images", "1", "--proposals", "40", "--image-size", "128", "--steps", "1")
    result = rcnn("bench", "methods", "--data", tiny_demo, "--backbone", "tiny", *sizes)
    assert result.exit_code == 0, result.output
    methods = re.compile(r"^(R-CNN|SPP-net|Fast R-CNN \+ SVD|Fast R-CNN) +(\S.*)$")
    found = [methods.match(line) for line in result.output.splitlines()]
    rows = [[match[1], *match[2].split()] for match in found if match]
    assert [cells[0] for cells in rows] == ["R-CNN", "SPP-net", "Fast R-CNN", "Fast R-CNN + SVD"]
    for cells in rows:
        conv, fc, total = (float(c) for c in cells[1:4])
        assert total == pytest.approx(conv + fc, abs=2e-3) and total > 0
    assert rows[0][4] == "1.0x" and [cells[7] for cells in rows] == ["1x", "20x", "146x", "213x"]


def test_bench_features_times_both_methods(tiny_demo):
    sizes = (
        "--images",
        "1",
        "--proposals",
        "50",
        "--image-size",
        "160",
        "--scales",
        "96",
        "--scales",
        "96,160",
    )
    result = rcnn("bench", "features", "--data", tiny_demo, "--backbone", "tiny", *sizes)
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith(("│ rcnn", "│ spp"))]
    assert len(rows) == 3 and "1.0x" in rows[0]


def test_the_fast_rcnn_chain_on_the_tiny_dataset(tiny_run, tmp_path):
    """finetune (the default method, resumed), compress, evaluate with and without SVD, detect, report."""
    import csv

    data, base = tiny_run
    run = tmp_path / "run"
    shutil.copytree(base, run)
    train = ("finetune", "--data", data, "--run", run, "--scales", "96", "--checkpoint-every", "2")
    result = rcnn(*train, "--iterations", "2")
    assert result.exit_code == 0, result.output
    result = rcnn(*train, "--iterations", "4")  # continues the checkpoint of iteration 2
    assert result.exit_code == 0 and "fine-tuned (fast, 1 process)" in result.output, result.output
    with open(run / "fast" / "finetune" / "log.csv") as rows:
        log = list(csv.DictReader(rows))
    assert [int(row["iteration"]) for row in log] == [2, 4]
    assert {"loss", "cls_loss", "box_loss", "accuracy"} <= set(log[0])
    result = rcnn("compress", "--run", run, "--fc6-rank", "64", "--fc7-rank", "16")
    assert result.exit_code == 0 and "64, 16" in result.output, result.output
    for extra in ((), ("--compressed",)):
        result = rcnn("evaluate", "--method", "fast", "--data", data, "--split", "test", "--run", run, *extra)
        assert result.exit_code == 0 and "mAP (voc07)" in result.output, result.output
    plain = json.loads((run / "fast" / "eval" / "test.json").read_text())
    svd = json.loads((run / "fast" / "eval" / "test.svd.json").read_text())
    assert not plain["compressed"] and svd["compressed"] and 0 <= svd["map"] <= 1
    assert plain["conv_seconds_per_image"] > 0 and plain["fc_seconds_per_image"] > 0
    images = sorted((data / "JPEGImages").glob("*.jpg"))[:2]
    grid = tmp_path / "grid.png"
    result = rcnn(
        "detect", *images, "--run", run, "--out", tmp_path / "out", "--score-thresh", "0", "--grid", grid
    )
    assert result.exit_code == 0, result.output
    assert cv2.imread(str(grid)).shape[1] > 2 * 400
    from stages.detections import read_detections

    assert 0 < len(read_detections(tmp_path / "out" / f"{images[0].stem}.json")) <= 100
    result = rcnn("report", "--run", run)
    assert result.exit_code == 0 and "fast/eval/test.svd.json" in result.output, result.output


def test_fast_rcnn_has_no_feature_cache_stages(tmp_path):
    result = rcnn("train-svm", "--method", "fast", "--run", tmp_path)
    assert result.exit_code == 2 and "fast" in result.output


def test_spp_finetune_refuses_conv_options_it_cannot_use(tiny_demo, tmp_path):
    result = rcnn("finetune", "--method", "spp", "--data", tiny_demo, "--run", tmp_path, "--backbone", "tiny")
    assert result.exit_code == 2 and "rcnn extract-features --method spp" in result.output
