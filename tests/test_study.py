"""`rcnn study`: a study's variants run as `rcnn run` runs a config, what two variants make alike made once
(hard links, manifests rewritten), and the comparison with the paper's ordering tested against the noise."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from stages.config.run_config import load_config
from stages.core.errors import UserError
from stages.pipeline.run import State, plan, steps
from stages.pipeline.sharing import (
    Holder,
    SharedArtifacts,
    fingerprints,
    reads_the_same,
    snapshot,
    stamp_of,
    take,
    written,
)
from stages.report.summary import MethodResult
from stages.runs.layout import RunLayout, manifest_path, read_manifest
from stages.study.config import Measure, StudyVariant, load_study
from stages.study.run import default_folder, plan_study, run_study, variant_runs
from stages.study.summary import OrderingStep, StudyReport, StudyRow
from tests.helpers import RUN_CONFIG, assert_one_line_error, rcnn

BASE = RUN_CONFIG.replace('methods = ["rcnn", "spp", "fast"]', 'methods = ["spp", "fast"]')
"""The tests' small run with SPP-net (whose training cache a later step completes) and Fast R-CNN."""

STUDY = """
[study]
title = "a small study"
source = "none: the tests'"
config = "base.toml"
measure = "fast"

[[variant]]
label = "base"
paper = 0.6

[[variant]]
label = "smaller fc6"
set = ["fast.compress.fc6_rank=8"]
measure = "fast.svd"
paper = 0.5

[[variant]]
label = "other SVMs"
name = "svm"
set = ["spp.svm.C=0.01"]
measure = "spp"
box_regression = false
paper = 0.4
"""


def _write(folder: Path, data: Path, study: str = STUDY) -> Path:
    (folder / "base.toml").write_text(BASE.format(data=data, run=folder / "unused"), encoding="utf-8")
    path = folder / "study.toml"
    path.write_text(study, encoding="utf-8")
    return path


def _run(path: Path, folder: Path, settings: tuple[str, ...] = ()) -> tuple[list[tuple[str, str]], object]:
    """Run the study; (the steps made as (variant folder name, step), the outcome)."""
    made: list[tuple[str, str]] = []
    runs = variant_runs(load_study(path), folder, settings=settings)
    roots = {run.layout.root: run.variant.name for run in runs}

    def show_plan(planned, layout):
        show_plan.root = roots[layout.root]

    outcome = run_study(
        load_study(path),
        runs,
        folder,
        show_plan=show_plan,
        on_step=lambda item, seconds, summary: made.append((show_plan.root, item.step.name)),
    )
    return made, outcome


@pytest.fixture(scope="module")
def studied(tiny_demo, tmp_path_factory):
    """(study file, study folder, the steps its first run made): the small study run once."""
    folder = tmp_path_factory.mktemp("study")
    path = _write(folder, tiny_demo)
    made, _ = _run(path, folder / "runs" / "small")
    return path, folder / "runs" / "small", made


def test_a_variant_makes_only_what_differs_from_an_earlier_one(studied):
    _, folder, made = studied
    assert ("base", "spp extract-features trainval (before fine-tuning)") in made
    assert [step for name, step in made if name == "smaller-fc6"] == [
        "fast compress",
        "fast evaluate test (SVD)",
    ]
    assert [step for name, step in made if name == "svm"] == ["spp train-svm", "spp evaluate test"]
    for artifact in (
        "backbone.pt",
        "fast/finetune/model.pt",
        "spp/features/trainval.h5",
        "proposals/test.h5",
    ):
        assert os.stat(folder / "base" / artifact).st_ino == os.stat(folder / "svm" / artifact).st_ino
    manifest = read_manifest(folder / "svm" / "fast" / "finetune" / "model.pt")
    assert manifest is not None and manifest["location"] == str(
        (folder / "svm" / "fast/finetune/model.pt").resolve()
    )
    assert all("/base/" not in entry["path"] for entry in manifest["inputs"])


def test_each_variant_is_a_whole_run_folder_that_rcnn_run_finds_up_to_date(studied):
    _, folder, _ = studied
    for name in ("base", "smaller-fc6", "svm"):
        config = load_config(folder / name / "config.toml")
        states = {item.step.name: item.state for item in plan(config)}
        assert set(states.values()) == {State.UP_TO_DATE}, (name, states)


def test_a_study_run_again_makes_nothing_and_prints_the_comparison(studied):
    path, folder, _ = studied
    result = rcnn("study", path, "--run", folder)
    assert result.exit_code == 0, result.output
    assert "0 stages run" in result.output and "smaller fc6" in result.output
    assert "The paper's ordering" in result.output
    page = (folder / "study.html").read_text(encoding="utf-8")
    assert "a small study" in page and "smaller fc6" in page and 'href="svm/report.html"' in page


def test_a_shared_file_made_again_by_one_variant_stays_as_it_was_in_the_other(studied, tmp_path):
    """Stages write by rename, never in place: a variant that remakes a file it shares leaves the other
    variant's link to the old one as it was."""
    _, folder, _ = studied
    shared = folder / "svm" / "fast" / "compressed" / "model.pt"
    before = shared.read_bytes()
    assert os.stat(shared).st_ino == os.stat(folder / "base" / "fast/compressed/model.pt").st_ino
    result = rcnn("run", folder / "base" / "config.toml", "--set", "fast.compress.fc7_rank=4")
    assert result.exit_code == 0, result.output
    assert os.stat(shared).st_ino != os.stat(folder / "base" / "fast/compressed/model.pt").st_ino
    assert shared.read_bytes() == before
    states = {item.step.name: item.state for item in plan(load_config(folder / "svm" / "config.toml"))}
    assert set(states.values()) == {State.UP_TO_DATE}


def test_the_plan_shows_what_each_variant_will_take_from_another(tiny_demo, tmp_path):
    path = _write(tmp_path, tiny_demo)
    folder = tmp_path / "runs" / "fresh"
    planned = plan_study(variant_runs(load_study(path), folder), folder)
    states = [{item.step.name: item.state for item in found} for _, found in planned]
    assert set(states[0].values()) == {State.RUN}
    assert states[1]["fast finetune"] is State.SHARE and states[1]["fast compress"] is State.RUN
    assert states[2]["spp finetune"] is State.SHARE and states[2]["spp train-svm"] is State.RUN
    assert not folder.exists()  # a plan makes nothing
    result = rcnn("study", path, "--run", folder, "--plan")
    assert result.exit_code == 0 and "share" in result.output, result.output


# ---- the study file ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (("[study]", "[study]\ncolour = 1"), "[study] colour: not a key"),
        (('config = "base.toml"', 'config = "missing.toml"'), "missing.toml: no such config file"),
        (('label = "base"', 'label = "base"\nname = "svm"'), "variants named 'svm' twice"),
        (("paper = 0.6", "paper = 60"), "paper: expected an mAP between 0 and 1"),
        (('measure = "spp"', 'measure = "faster"'), "'faster' is not one of run.methods"),
        (('measure = "fast.svd"', 'measure = "fast.half"'), "the run evaluates fast, fast.svd"),
        (('set = ["spp.svm.C=0.01"]', 'set = ["spp.svm.D=1"]'), "variant 'other SVMs'"),
    ],
)
def test_a_bad_study_is_a_one_line_error_naming_the_file(tiny_demo, tmp_path, change, fragment):
    old, new = change
    assert old in STUDY
    path = _write(tmp_path, tiny_demo, STUDY.replace(old, new, 1))
    result = rcnn("study", path, "--run", tmp_path / "runs" / "bad", "--plan")
    assert_one_line_error(result, str(path), fragment)


def test_a_study_needs_two_variants(tmp_path):
    path = tmp_path / "one.toml"
    path.write_text('[study]\ntitle = "t"\nconfig = "c.toml"\n[[variant]]\nlabel = "a"\n', encoding="utf-8")
    with pytest.raises(UserError, match="at least two"):
        load_study(path)


# ---- sharing ----------------------------------------------------------------------------------------


def test_a_changed_option_changes_the_fingerprint_of_its_step_and_of_those_that_read_it(tiny_demo, tmp_path):
    config = tmp_path / "base.toml"
    config.write_text(BASE.format(data=tiny_demo, run=tmp_path / "run"), encoding="utf-8")
    data = load_config(config).data
    before = fingerprints(steps(load_config(config)), data)
    after = fingerprints(steps(load_config(config, ["spp.finetune.iterations=5"])), data)
    changed = {key.label for key in before if before[key] != after[key]}
    assert changed == {
        "spp finetune",
        "spp extract-features trainval",
        "spp extract-features test",
        "spp train-svm",
        "spp train-bbox",
        "spp evaluate test",
    }
    assert fingerprints(steps(load_config(config, run_folder=str(tmp_path / "elsewhere"))), data) == before
    assert fingerprints(steps(load_config(config)), dataclasses.replace(data, root="other")) != before
    assert (
        fingerprints(steps(load_config(config)), dataclasses.replace(data, root=f"{data.root}/.")) == before
    )


def test_a_holder_whose_file_changed_since_is_not_taken_unless_a_wanted_later_step_completed_it(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    (first / "f").mkdir(parents=True)
    cache = first / "f" / "cache.h5"
    cache.write_bytes(b"before")
    index = SharedArtifacts(tmp_path / "shared.json")
    index.record("early", Holder(first, first, written({}, snapshot(first))))
    assert index.find("early", second) is not None and index.find("early", first) is None
    os.utime(cache, ns=(1, 1))  # completed since by a later step of its run
    index.record("late", Holder(first, first, written({}, snapshot(first))))
    assert index.find("early", second) is None
    assert index.find("early", second, wanted=["late"]) is not None
    index.save()
    assert SharedArtifacts(tmp_path / "shared.json").holders == index.holders


def _holder(root: Path, *artifacts: Path) -> Holder:
    """The holder of ``artifacts`` of the run folder ``root``, as the index records a step's files."""
    files = [path for artifact in artifacts for path in (artifact, manifest_path(artifact))]
    return Holder(root, root, {path.relative_to(root).as_posix(): stamp_of(path) for path in files})


@pytest.mark.parametrize("replica", [0, 2])
def test_taking_links_the_files_and_moves_the_manifest_to_its_new_place(made, tmp_path, replica):
    """A fine-tuned Fast R-CNN of a finished `rcnn run`, taken into a run, or a replica (which reads its
    run's proposals), once the proposals and backbone it read are taken too."""
    _, source = made
    made_run = RunLayout(source)
    model = made_run.method("fast").finetune.model
    run = RunLayout(tmp_path / "b").replica(replica)
    reads = [run.proposals("trainval"), run.pretrain.model]
    assert not reads_the_same(_holder(source, model), run, reads)
    take(_holder(source, made_run.proposals("trainval")), RunLayout(tmp_path / "b"))
    take(_holder(source, made_run.pretrain.model), run)
    assert reads_the_same(_holder(source, model), run, reads)
    take(_holder(source, model), run)
    taken = run.method("fast").finetune.model
    assert os.stat(taken).st_ino == os.stat(model).st_ino
    manifest, original = read_manifest(taken), read_manifest(model)
    assert manifest is not None and original is not None
    assert manifest["location"] == str(taken.resolve())
    moved = {Path(entry["path"]).resolve() for entry in manifest["inputs"]}
    assert {path.resolve() for path in reads} <= moved
    outside = [
        entry
        for entry in original["inputs"]
        if not Path(entry["path"]).resolve().is_relative_to(source.resolve())
    ]
    assert all(entry in manifest["inputs"] for entry in outside)  # any outside the run, as they were
    assert len(manifest["inputs"]) == len(original["inputs"])


# ---- the verdict ------------------------------------------------------------------------------------


def _row(label: str, paper: float | None, measured: float, seeds: tuple[float, ...] = ()) -> StudyRow:
    variant = StudyVariant(label, label, (), Measure("fast"), paper)
    result = MethodResult(label, "test", "voc07", measured, None)
    return StudyRow(variant, None, result, tuple(enumerate(seeds)))  # type: ignore[arg-type]


def _report(*steps: OrderingStep) -> StudyReport:
    rows = tuple(dict.fromkeys(row for step in steps for row in (step.higher, step.lower)))
    return StudyReport(None, rows, steps)  # type: ignore[arg-type]


def test_the_verdict_says_whether_the_ordering_held_and_beyond_which_noise():
    a, b, c = _row("a", 0.7, 0.5), _row("b", 0.6, 0.4), _row("c", 0.5, 0.45)
    held = _report(OrderingStep(a, b, 0.1, 0.01, "bootstrap"), OrderingStep(b, c, 0.05, 0.2, "bootstrap"))
    assert held.verdict == (
        "The paper's ordering held (a > b > c), beyond the noise: a > b; not the rest (bootstrap)."
    )
    reversed_ = _report(OrderingStep(a, b, 0.1, 0.01, "t"), OrderingStep(b, c, -0.05, 0.3, "t"))
    assert reversed_.verdict == (
        "The paper's ordering (a > b > c) did not hold: c > b by 0.050 (within the noise, p 0.30) (t)."
    )
    tied = _report(OrderingStep(a, b, 0.0, 1.0, "t"))
    assert "did not hold: b = a" in tied.verdict
    untested = _report(OrderingStep(a, b, 0.1, None, "no detections file"))
    assert untested.verdict == "The paper's ordering held (a > b), untested against the noise."
    d = _row("d", 0.6, 0.3)
    ties = _report(OrderingStep(a, b, 0.1, 0.01, "t"), OrderingStep(a, d, 0.2, 0.01, "t"))
    assert ties.verdict == "The paper's ordering held (a > b = d), every step beyond the noise (t)."
    assert "fewer than two distinct paper figures" in _report().verdict


def test_a_row_with_seeds_has_their_spread():
    row = _row("a", 0.7, 0.5, (0.5, 0.6, 0.7))
    assert row.spread is not None and row.spread.mean == pytest.approx(0.6)
    assert _row("b", 0.7, 0.5, (0.5,)).spread is None


STUDIES = sorted((Path(__file__).resolve().parent.parent / "configs" / "studies").rglob("*.toml"))


@pytest.mark.parametrize("path", STUDIES, ids=lambda path: path.parent.name + "/" + path.name)
def test_every_shipped_study_resolves_and_its_rows_differ(path, tmp_path):
    study = load_study(path)
    runs = variant_runs(study, tmp_path)
    assert study.source and sum(variant.paper is not None for variant in study.variants) >= 1
    rows = [(run.config.methods, run.config.propose, run.variant.measure) for run in runs]
    assert len({repr(row) for row in rows}) == len(rows)  # no two rows read the same evaluation


def test_the_demo_and_voc_forms_of_a_study_run_in_folders_of_their_own():
    studies = Path("configs") / "studies"
    assert default_folder(studies / "fast_layers.toml") == Path("runs/studies/fast_layers")
    assert default_folder(studies / "voc07" / "fast_layers.toml") == Path("runs/studies/voc07/fast_layers")
    assert default_folder(Path("elsewhere") / "mine.toml") == Path("runs/studies/mine")


@pytest.mark.slow
def test_with_seeds_each_variant_is_trained_again_and_the_ordering_tested_over_the_seeds(tiny_demo, tmp_path):
    study = STUDY.split('[[variant]]\nlabel = "other SVMs"')[0]  # the two Fast R-CNN rows
    path = _write(tmp_path, tiny_demo, study)
    folder = tmp_path / "runs" / "seeded"
    result = rcnn("study", path, "--run", folder, "--seeds", "2", "--set", "run.methods=['fast']")
    assert result.exit_code == 0, result.output
    assert "seeds" in result.output and "±." in result.output and "t-test over the seeds" in result.output
    first, second = folder / "base" / "seeds" / "1", folder / "smaller-fc6" / "seeds" / "1"
    model = "fast/finetune/model.pt"
    assert os.stat(first / model).st_ino == os.stat(second / model).st_ino
    assert os.stat(first / model).st_ino != os.stat(folder / "base" / model).st_ino  # another seed
    assert 'class="num">' in (folder / "study.html").read_text(encoding="utf-8")
