"""`rcnn run`: a config's stages in order through the staged commands' library functions; a finished
run is up to date, a changed option reruns its stage and those after it, an interrupted stage resumes,
and RUN/config.toml remakes the run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stages.config.run_config import load_config
from stages.pipeline.run import State, plan, run_config
from stages.report.summary import report
from stages.runs.layout import RunLayout
from tests.helpers import CHECKPOINT_SAVED, RUN_CONFIG, killed, make_run, rcnn, run_steps

FAST_STEPS = {
    "fast finetune",
    "fast evaluate test",
    "fast compress",
    "fast evaluate test (SVD)",
    "fast detect",
}


def _states(config: Path, *overrides: str) -> dict[str, State]:
    return {item.step.name: item.state for item in plan(load_config(config, overrides))}


def _running(states: dict[str, State]) -> set[str]:
    return {name for name, state in states.items() if state is State.RUN}


def test_the_run_made_what_the_staged_commands_make(made, tiny_run, tmp_path):
    """The same options through the staged commands give byte-identical detections (the tiny run's
    proposals and backbone were made by them with the config's settings)."""
    data, base = tiny_run
    _, made_run = made
    run = tmp_path / "staged"
    shutil.copytree(base, run)
    on = ("--data", data)
    run_steps(
        run,
        ("finetune", "--method", "rcnn", *on, "--iterations", "4", "--checkpoint-every", "2"),
        ("extract-features", "--method", "rcnn", *on, "--split", "trainval"),
        ("extract-features", "--method", "rcnn", *on, "--split", "test"),
        ("train-svm", "--method", "rcnn"),
        ("train-bbox", "--method", "rcnn"),
        ("evaluate", "--method", "rcnn", *on, "--split", "test"),
        (
            "finetune",
            "--method",
            "fast",
            *on,
            "--iterations",
            "4",
            "--learning-rate",
            "0.01",
            "--scales",
            "96",
            "--checkpoint-every",
            "2",
        ),
        ("evaluate", "--method", "fast", *on, "--split", "test"),
    )
    for method in ("rcnn", "fast"):
        staged = RunLayout(run).method(method).detections("test")
        assert staged.read_bytes() == RunLayout(made_run).method(method).detections("test").read_bytes()
    for name in ("config.toml", "report.html", "fast/detect/grid.png", "spp/eval/test.json"):
        assert (made_run / name).is_file(), name


def test_the_report_adds_selective_search_to_test_time_and_draws_its_recall(made):
    """The test seconds with proposals add the test split's selective search, as its manifest records
    it; its recall curves are the report's, in the table and the page."""
    _, run = made
    found = report(RunLayout(run))
    searched = json.loads((run / "proposals" / "test.manifest.json").read_text())["results"]
    for result in found.results:
        assert result.test_seconds_per_image is not None and result.test_seconds_with_proposals is not None
        added = result.test_seconds_with_proposals - result.test_seconds_per_image
        assert added == pytest.approx(1 / searched["images_per_second"]), result.label
    assert [(p.label, p.split) for p in found.recall] == [
        ("selective search (fast)", "test"),
        ("selective search (fast)", "trainval"),
    ]
    test = found.recall[0].curves
    assert test.at(0.5) == pytest.approx(searched["recall"]["0.5"], abs=1e-6)
    page = (run / "report.html").read_text()
    assert "AR (1,000)" in page and 'alt="recall against IoU at 300' in page


def test_a_finished_run_is_up_to_date_and_a_rerun_changes_nothing(made):
    config, run = made
    assert set(_states(config).values()) == {State.UP_TO_DATE}
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    outcome = run_config(load_config(config))
    assert outcome.ran == []
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before


def test_a_changed_option_reruns_its_stage_and_those_after_it_only(made):
    config, _ = made
    assert _running(_states(config, "fast.finetune.iterations=5")) == FAST_STEPS
    assert _running(_states(config, "spp.bbox.alpha=10.0")) == {"spp train-bbox", "spp evaluate test"}
    states = _states(config, "propose.max_boxes=100")
    assert states.pop("pretrain") is State.UP_TO_DATE  # it reads the annotations' boxes, not proposals
    assert set(states.values()) == {State.RUN}
    # a network that starts from other weights than the run's backbone does not wait for pre-training
    planned = plan(load_config(config, ["pretrain.iterations=50", "fast.finetune.weights=random"]))
    reasons = {item.step.name: item.reason for item in planned}
    assert reasons["rcnn finetune"] == "after pretrain" and reasons["fast finetune"] == "weights changed"


def test_a_copied_run_folder_is_planned_anew(made, tmp_path):
    config, run = made
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    planned = plan(load_config(config, [f"run.folder={copy}"]))
    assert {item.reason for item in planned if item.step.after == ()} == {
        "made elsewhere (a copied or moved run folder)"
    }
    assert {item.state for item in planned} == {State.RUN}


@pytest.mark.slow
def test_changed_inputs_rerun_what_read_them_and_an_interrupted_stage_resumes(tiny_demo, tmp_path):
    config, run = make_run(tiny_demo, tmp_path)
    svm = run / "rcnn" / "svm.npz"
    svm.write_bytes(svm.read_bytes())  # same bytes, a new modification time
    assert _running(_states(config)) == {"rcnn evaluate test"}
    fast = RunLayout(run).method("fast")
    expected = fast.detections("test").read_bytes()
    fast.finetune.model.unlink()  # as if killed after its last checkpoint
    fast.finetune.model.with_suffix(".manifest.json").unlink()
    states = _states(config)
    assert states["fast finetune"] is State.RESUME
    assert _running(states) == {"rcnn evaluate test"} | FAST_STEPS - {"fast finetune"}
    restarted = {item.step.name: item.state for item in plan(load_config(config), restart=True)}
    assert restarted["fast finetune"] is State.RUN
    outcome = run_config(load_config(config))
    assert {item.step.name for item in outcome.ran} == _running(states) | {"fast finetune"}
    assert fast.detections("test").read_bytes() == expected
    assert set(_states(config).values()) == {State.UP_TO_DATE}


@pytest.mark.slow
def test_a_killed_run_resumes_where_it_stopped_to_the_same_result(made, tiny_demo, tmp_path):
    """SIGKILLed right after R-CNN's first checkpoint (pre-training's two come before it), then rerun:
    the plan resumes that stage, and every detections file equals the uninterrupted run's."""
    run = tmp_path / "run"
    config = tmp_path / "config.toml"
    config.write_text(RUN_CONFIG.format(data=tiny_demo, run=run), encoding="utf-8")
    killed(CHECKPOINT_SAVED, 3, "run", config)
    assert _states(config)["rcnn finetune"] is State.RESUME
    result = rcnn("run", config)
    assert result.exit_code == 0, result.output
    for method, variant in (("rcnn", ""), ("spp", ""), ("fast", ""), ("fast", "svd")):
        resumed = RunLayout(run).method(method).detections("test", variant)
        assert (
            resumed.read_bytes() == RunLayout(made[1]).method(method).detections("test", variant).read_bytes()
        )


def test_the_resolved_config_remakes_the_run(made):
    config, run = made
    resolved = load_config(run / "config.toml")
    assert resolved == load_config(config)
    assert set(_states(run / "config.toml").values()) == {State.UP_TO_DATE}


def test_the_plan_is_printed_and_a_bad_config_is_one_line(made, tmp_path):
    config, _ = made
    result = rcnn("run", config, "--plan", "--set", "spp.svm.C=0.01")
    assert result.exit_code == 0, result.output
    assert "spp train-svm" in result.output and "C changed" in result.output
    bad = tmp_path / "bad.toml"
    bad.write_text("[rcnn.finetune]\nbackbone = 3\n", encoding="utf-8")
    result = rcnn("run", bad)
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {bad}: rcnn.finetune.backbone: expected text, got 3"


@pytest.mark.slow
def test_under_torchrun_the_data_parallel_stages_use_every_process_and_the_rest_run_once(tiny_demo, tmp_path):
    """Two gloo processes: proposals, Fast R-CNN's fine-tuning and the evaluations are shared by both;
    compression runs on rank 0 alone while the other process waits; the plan and the results are printed
    once."""
    run = tmp_path / "run"
    text = RUN_CONFIG.format(data=tiny_demo, run=run).replace("[detect]\nimages = 2\n", "")
    config = tmp_path / "config.toml"
    config.write_text(
        text.replace('methods = ["rcnn", "spp", "fast"]\n', 'methods = ["fast"]\ndevice = "cpu"\n'),
        encoding="utf-8",
    )
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "rcnn_cli", "--", "run", str(config),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=Path.cwd())
    assert result.returncode == 0, result.stdout + result.stderr
    manifest = json.loads((run / "fast" / "finetune" / "model.manifest.json").read_text())
    assert manifest["results"]["world_size"] == 2
    proposals = json.loads((run / "proposals" / "test.manifest.json").read_text())
    assert proposals["results"]["processes"] == 2
    assert (run / "fast" / "eval" / "test.svd.json").is_file()
    assert result.stdout.count("plan") == 1 and result.stdout.count("stages run") == 1


def test_every_evaluation_of_the_run_is_diagnosed_as_its_detections_file_says(made):
    """The run's evaluation steps write each evaluation's error diagnosis; diagnosing the detections file
    the step wrote gives the same, its C50 is the evaluation's mAP, and the report shows them all."""
    from stages.datasets.formats import load_dataset
    from stages.detections.files import read_detections
    from stages.evaluation.diagnosis import diagnose, similar_classes

    config, run = made
    layout = RunLayout(run)
    dataset = load_dataset(Path(load_config(config).data.root), "test")
    for method, variant in (("rcnn", ""), ("spp", ""), ("fast", ""), ("fast", "svd")):
        files = layout.method(method)
        written = json.loads(files.diagnosis("test", variant).read_text(encoding="utf-8"))
        untrained = written.get("untrained_classes", [])
        detections = read_detections(files.detections("test", variant))
        again = diagnose(dataset, detections, "voc07", similar_classes(dataset), untrained)
        assert written["false_positives"] == again.false_positives, method
        results = json.loads(files.results("test", variant).read_text(encoding="utf-8"))
        assert written["pr_breakdown"]["c50"] == pytest.approx(results["map"], abs=1e-6)
        assert ("without_box_regression" in written) == results["box_regression"]
        assert files.diagnosis("test", variant).with_suffix(".png").stat().st_size > 0
    result = rcnn("report", "--run", run)
    assert result.exit_code == 0 and "errors: top-ranked false positives" in result.output, result.output
    page = layout.report_page.read_text(encoding="utf-8")
    assert 'id="errors"' in page and page.count('alt="errors of ') == 4


def test_similar_classes_that_the_dataset_lacks_are_said_before_anything_runs(tiny_demo, tmp_path):
    config = tmp_path / "config.toml"
    text = RUN_CONFIG.format(data=tiny_demo, run=tmp_path / "run")
    config.write_text(text + '\n[evaluate]\nsimilar = [["disc", "zebra"]]\n', encoding="utf-8")
    result = rcnn("run", config)
    assert result.exit_code == 2 and "zebra" in result.output and str(config) in result.output
    assert not (tmp_path / "run" / "proposals").exists()
