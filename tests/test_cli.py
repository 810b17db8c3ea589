"""The command line through Typer's runner: help, the chain on a tiny dataset, and the error edge."""

import json
import re
import shutil
import subprocess
import sys

import pytest
import typer
from typer.core import TyperGroup

from rcnn_cli.app import app
from stages.datasets.formats import load_dataset
from stages.methods import METHODS
from tests.helpers import assert_one_line_error, rcnn


def evaluate_test_split(data, detections, *extra):
    return rcnn("evaluate", "--data", data, "--split", "test", "--detections", detections, *extra)


def every_command(group: TyperGroup, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The path of every command and sub-command of the app."""
    found: list[tuple[str, ...]] = []
    for name, command in group.commands.items():
        if isinstance(command, TyperGroup):
            found += every_command(command, (*path, name))
        else:
            found.append((*path, name))
    return found


def test_version_and_every_command_has_help_with_an_example():
    result = rcnn("--version")
    assert result.exit_code == 0 and result.output.startswith("rcnn ")
    commands = every_command(typer.main.get_command(app))
    assert {("compress",), ("bench", "methods"), ("data", "demo"), ("finetune",)} <= set(commands)
    assert len(commands) == 25  # bench gpu-check the last added
    for command in commands:
        result = rcnn(*command, "--help")
        assert result.exit_code == 0 and "Example" in result.output, command


def test_help_shows_config_tables_in_brackets():
    """Rich reads "[data]" as markup and drops it unless escaped."""
    output = " ".join(rcnn("run", "--help").output.split())
    assert "(overrides [data] root)" in output and "(overrides [data] classes)" in output


def test_progress_counts_the_rate_of_this_run_only():
    """A resumed task's earlier items are not counted in its rate, nor bursts (a pool's images come
    several at once): items done here over the time here, in seconds an item when slower than one a
    second, and the time left at that rate."""
    from rich.progress import Task, TaskID

    from rcnn_cli.console import _RateColumn, _RemainingColumn

    fields = {"done_before": 5, "unit": "img"}
    task = Task(TaskID(0), "search", 10, 7, _get_time=lambda: 100.0, fields=fields)
    task.start_time = 90.0  # 2 images in 10 s: 0.2 an image a second, 3 left: 15 s
    rate, left = _RateColumn(), _RemainingColumn()
    assert (str(rate.render(task)), str(left.render(task))) == ("5.0 s/img", "0:00:15")
    task.completed, task.total = 45, 50
    assert (str(rate.render(task)), str(left.render(task))) == ("4.00 img/s", "0:00:01")


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
    assert "2 problems" in result.output and "000000.jpg: not an image" in result.output
    assert "000001.xml: unreadable annotation" in result.output


def test_internal_errors_exit_1_and_debug_shows_the_traceback(tiny_demo, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("stages.datasets.formats.check_dataset", broken)  # imported when the command runs
    assert_one_line_error(
        rcnn("data", "check", "--data", tiny_demo), "internal error: RuntimeError: boom", "--debug", code=1
    )
    result = rcnn("--debug", "data", "check", "--data", tiny_demo)
    assert result.exit_code == 1 and "Traceback" in result.output and "boom" in result.output


@pytest.mark.parametrize("args", [["propose", "--data"], ["evaluate", "--metric"], ["nosuchcommand"]])
def test_usage_errors_exit_2(args):
    assert rcnn(*args).exit_code == 2


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


def test_bench_methods_times_the_lineage_beside_the_paper(tiny_demo):
    sizes = ("--images", "1", "--proposals", "40", "--image-size", "128", "--steps", "1")
    result = rcnn("bench", "methods", "--data", tiny_demo, "--backbone", "tiny", *sizes)
    assert result.exit_code == 0, result.output
    sections = (
        r"the work against the floor|where the test passes|training mini-batches against|where the training"
    )
    first, second, spent, training, training_spent = re.split(sections, result.output)
    timing, floor = _rows(first), _rows(second)
    lineage = ["R-CNN", "SPP-net", "Fast R-CNN", "Fast R-CNN + SVD", "Faster R-CNN", "Faster R-CNN + SVD"]
    lineage.append("torchvision")
    assert [cells[0] for cells in timing] == [cells[0] for cells in floor] == lineage
    slowest = float(timing[0][3])
    for cells in timing:
        conv, fc, total = (float(c) for c in cells[1:4])
        assert total == pytest.approx(conv + fc, abs=2e-3) and total > 0
        assert_speed_up(cells[4], slowest, total)
    assert [cells[7] for cells in timing[:4]] == ["1x", "20x", "146x", "213x"]
    for cells in floor:  # G multiply-adds (conv, fc), their floor seconds, the test seconds, the share
        conv_macs, fc_macs = float(cells[1]), float(cells[2])
        assert conv_macs > 0 and fc_macs > 0 and 0 < float(cells[6].rstrip("%")) <= 200
    rows = [line.split()[-4:] for line in spent.splitlines() if line.endswith("%")]
    assert len(rows) == 6  # conv, fc, max pooling and ReLU, RoI pooling, NMS, other
    for column in (1, 3):  # Fast R-CNN's shares, the peer's
        assert sum(float(cells[column].rstrip("%")) for cells in rows) == pytest.approx(100, abs=3)
    trained = _rows(training)  # G a mini-batch (forward and backward), floor s, train s, share
    assert [cells[0] for cells in trained] == ["R-CNN", "SPP-net", "Fast R-CNN", "Faster R-CNN"]
    for cells, timed in zip(trained, [timing[0], timing[1], timing[2], timing[4]], strict=True):
        assert float(cells[1]) > 0 and cells[3] == timed[5] and 0 < float(cells[4].rstrip("%")) <= 200
    shares = [line.split() for line in training_spent.splitlines() if line.endswith("%")]
    assert len(shares) == 6  # Fast R-CNN's and Faster R-CNN's mini-batches by kind of op
    for column in (-3, -1):
        assert sum(float(cells[column].rstrip("%")) for cells in shares) == pytest.approx(100, abs=3)


def assert_speed_up(shown: str, slowest: float, total: float) -> None:
    """A speed-up cell ("3.3x") is R-CNN's total over the row's, within what rounding the two totals
    to three decimals (as shown) and the speed-up to its digits allows."""
    lowest = (slowest - 5e-4) / (total + 5e-4)
    highest = (slowest + 5e-4) / max(total - 5e-4, 1e-9)
    digits = shown.rstrip("x").partition(".")[2]
    half = 0.5 * 10 ** -len(digits)  # "1.0x" stands for 0.95 up to 1.05
    assert lowest - half <= float(shown.rstrip("x")) <= highest + half, (shown, slowest, total)


def _rows(table: str) -> list[list[str]]:
    """The rows of a bench table that start with a method's name: the name, then the cells."""
    methods = re.compile(r"^(R-CNN|SPP-net|(?:Fast|Faster) R-CNN(?: \+ SVD)?|torchvision) +(\d.*)$")
    found = [methods.match(line) for line in table.splitlines()]
    return [[match[1], *match[2].split()] for match in found if match]


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
    lines = [line for line in result.output.splitlines() if line.startswith(("│ rcnn", "│ spp"))]
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in lines]
    assert [cells[:2] for cells in rows] == [["rcnn", "-"], ["spp", "96"], ["spp", "96,160"]]
    for cells in rows:  # the speed-up over R-CNN is R-CNN's total over the row's
        assert_speed_up(cells[5], float(rows[0][4]), float(cells[4]))


def test_fast_rcnn_has_no_feature_cache_stages(tmp_path):
    result = rcnn("train-svm", "--method", "fast", "--run", tmp_path)
    assert result.exit_code == 2 and "fast" in result.output


def test_spp_finetune_refuses_conv_options_it_cannot_use(tiny_demo, tmp_path):
    result = rcnn("finetune", "--method", "spp", "--data", tiny_demo, "--run", tmp_path, "--backbone", "tiny")
    assert result.exit_code == 2 and "rcnn extract-features --method spp" in result.output


def test_a_method_refuses_options_it_does_not_take(tiny_demo, tmp_path):
    assert_one_line_error(
        rcnn("finetune", "--method", "rcnn", "--data", tiny_demo, "--run", tmp_path, "--test-scale", "600"),
        "--test-scale: not an option of R-CNN fine-tuning",
    )
    assert_one_line_error(
        rcnn(
            "extract-features", "--method", "spp", "--data", tiny_demo, "--split", "test", "--batch-size", "8"
        ),
        "--batch-size: not an option of SPP-net feature extraction",
    )
    image = next((tiny_demo / "JPEGImages").glob("*.jpg"))
    assert_one_line_error(
        rcnn("detect", image, "--method", "spp", "--compressed", "--run", tmp_path),
        "--compressed: SPP-net has no compressed model",
    )


def test_report_of_a_run_without_evaluations(tmp_path):
    result = rcnn("report", "--run", tmp_path)
    assert result.exit_code == 0 and "no evaluations yet" in result.output
    assert_one_line_error(rcnn("report", "--run", tmp_path / "nowhere"), "nowhere: no such run folder")


def test_the_console_script_loads_no_library_before_it_runs():
    """Selective-search workers, spawned processes, run the console script again: its import must not
    load torch (each worker would pay seconds and hundreds of MB for it)."""
    code = "import sys, rcnn_cli.entry; print(sorted({'torch', 'stages', 'rcnn_cli.app'} & set(sys.modules)))"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert found.strip() == "[]"


def test_bench_proposals_times_one_worker_then_every_core(tiny_demo):
    result = rcnn(
        "bench", "proposals", "--data", tiny_demo, "--images", "2", "--mode", "single", "--max-side", "100"
    )
    assert result.exit_code == 0, result.output
    rows = re.findall(r"│ +(\d+) │ +2 │ +([\d.]+) │ +([\d.]+) │ +([\d.]+)x │", result.output)
    assert rows[0][0] == "1" and rows[0][3] == "1.00" and len(rows) in (1, 2)  # one row on a 1-core machine
    assert all(float(rate) > 0 for _, _, rate, _ in rows)
    recall = re.search(r"^selective search \(single\) +[\d.]+ +\d+ +([01]\.\d{3}) ", result.output, re.M)
    assert recall is not None and 0 < float(recall.group(1)) <= 1, result.output


def test_bench_proposals_names_a_run_folder_that_is_not_there(tiny_demo, tmp_path):
    result = rcnn("bench", "proposals", "--data", tiny_demo, "--images", "1", "--run", tmp_path / "nowhere")
    assert_one_line_error(result, "nowhere: no such run folder")


def test_bench_svm_memory_trains_on_copies_of_the_cache(made):
    _, run = made
    result = rcnn("bench", "svm-memory", "--run", run, "--method", "rcnn", "--copies", "1,2")
    assert result.exit_code == 0, result.output
    rows = re.findall(r"│ +([12]) │ +(\d+) │ +\d+ │ +\d+ │ +(\d+) │ +[\d.]+ │", result.output)
    assert [copies for copies, _, _ in rows] == ["1", "2"]
    assert int(rows[1][1]) == 2 * int(rows[0][1]) and all(int(peak) > 0 for _, _, peak in rows)


@pytest.mark.slow
def test_bench_startup_times_the_help_of_every_command():
    result = rcnn("bench", "startup", "--repeats", "1")
    assert result.exit_code == 0, result.output
    rows = dict(re.findall(r"^ +(rcnn[a-z -]*?) +([\d.]+) +[\d.]+ *$", result.output, re.M))
    assert {"rcnn", "rcnn finetune", "rcnn bench methods", "rcnn data demo"} <= set(rows)
    assert len(rows) == 25 + 3 and all(
        float(seconds) > 0 for seconds in rows.values()
    )  # and rcnn, bench, data


def test_bench_coco_read_reads_a_generated_split():
    result = rcnn("bench", "coco-read", "--images", "20", "--annotations", "50")
    assert result.exit_code == 0 and "│     20 │          50 │" in result.output, result.output


@pytest.mark.slow
def test_bench_scaling_runs_the_stages_under_torchrun_and_times_growth(tiny_run):
    """SPP-net's pyramids need only the run's backbone; two processes on the tiny test split's 3 images."""
    data, run = tiny_run
    growth = ("--sides", "64,96", "--counts", "20,40", "--images", "1")
    result = rcnn(
        "bench", "scaling", "--data", data, "--run", run, "--method", "spp", "--before-finetuning",
        "--processes", "2", "--max-side", "160", *growth,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    staged = re.findall(
        r"^(propose|extract-features \(spp\)) +2 +3 +[\d.]+ +[\d.]+ +1\.0x", result.output, re.M
    )
    assert staged == ["propose", "extract-features (spp)"]
    rows = sum(len(method.variants) for method in METHODS.values())  # a column each
    grown = re.findall(rf"^ *(\d+) +(\d+) +([\d.]*)(?: +[\d.]+){{{rows}}} *$", result.output, re.M)
    assert [(side, count, bool(search)) for side, count, search in grown] == [
        ("64", "2000", True), ("96", "2000", True), ("600", "20", False), ("600", "40", False),
    ]  # fmt: skip
