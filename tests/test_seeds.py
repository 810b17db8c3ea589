"""`rcnn run --seeds N`: the run trained again with every seed + 1, ..., in RUN/seeds/<k>/ on the run's
proposals, and the report's spread over the seeds with the differences beyond it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from stages.config.run_config import load_config
from stages.pipeline.run import State, plan
from stages.report.summary import SeedSpread, report, seed_differences
from stages.runs.layout import RunLayout, read_manifest
from tests.helpers import RUN_CONFIG, rcnn

FAST_ONLY = RUN_CONFIG.replace('methods = ["rcnn", "spp", "fast"]', 'methods = ["fast"]')
"""The tests' small run with Fast R-CNN alone: the cheapest run with two evaluations to compare, the
network and its compressed model."""


def test_a_replica_adds_its_offset_to_every_training_seed_and_keeps_the_proposals(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(RUN_CONFIG.format(data=tmp_path / "data", run=tmp_path / "run"), encoding="utf-8")
    chosen = load_config(config, ["rcnn.svm.seed=5", "propose.seed=3"])
    replica = chosen.replica(2)
    assert chosen.replica(0) is chosen
    assert replica.run.folder == chosen.run.folder and replica.run.replica == 2
    assert replica.run.layout.root == tmp_path / "run" / "seeds" / "2"
    assert replica.replica(1) == chosen.replica(3)  # a replica's config.toml remakes it, --seeds too
    assert replica.propose == chosen.propose  # the proposals are made once, for every seed
    assert replica.pretrain is not None and chosen.pretrain is not None
    assert replica.pretrain.seed == chosen.pretrain.seed + 2
    rcnn_tables = replica.methods["rcnn"].tables
    assert rcnn_tables["svm"].seed == 7 and rcnn_tables["finetune"].seed == 2
    assert replica.methods["fast"].tables["finetune"].seed == 2
    assert replica.detect is None
    unchanged = ("data", "evaluate")
    assert all(getattr(replica, name) == getattr(chosen, name) for name in unchanged)


def test_a_replica_reads_its_runs_proposals_and_is_left_out_of_its_manifests(tmp_path):
    run = RunLayout(tmp_path / "run")
    replica = run.replica(3)
    assert replica.root == tmp_path / "run" / "seeds" / "3" and replica.replica_offset == 3
    assert replica.proposals("test") == run.proposals("test")
    assert replica.method("fast").root == replica.root / "fast"
    assert run.replica_offset == 0
    mine = RunLayout(tmp_path / "experiments" / "seeds" / "1")  # a user's folder, named as a replica's
    assert mine.replica_offset == 0 and mine.proposals("test") == mine.root / "proposals" / "test.h5"
    for layout in (run, replica):
        layout.method("fast").root.mkdir(parents=True)
        (layout.method("fast").root / "a.manifest.json").write_text("{}", encoding="utf-8")
    assert run.manifests() == [run.method("fast").root / "a.manifest.json"]
    assert [r.root for r in run.replicas()] == [run.root, replica.root]
    command = replica.command_for(replica.proposals("test"), "data")
    assert command == f"rcnn propose --data data --split test --run {replica}"


def _spread(label: str, *maps: float, split: str = "test", first: int = 0) -> SeedSpread:
    return SeedSpread(label, label, "", split, tuple(enumerate(maps, start=first)))


def test_methods_with_the_same_seeds_are_compared_seed_by_seed():
    """Each seed replicates the whole run, so two methods' seed k share its backbone: a method always a
    little above another is beyond the noise even when both spread widely."""
    above = _spread("a", 0.80, 0.86, 0.70)
    below = _spread("b", 0.79, 0.85, 0.69)
    found = seed_differences([above, below])[0]
    assert found.paired and found.beyond_noise and found.difference == pytest.approx(0.01)
    wide = _spread("c", 0.81, 0.83, 0.72)
    d = np.array([0.80, 0.86, 0.70]) - np.array([0.81, 0.83, 0.72])
    t = d.mean() / (d.std(ddof=1) / math.sqrt(3))  # Student's paired t, 2 degrees of freedom
    from scipy import stats

    compared = seed_differences([above, wide])[0]
    assert compared.p_value == pytest.approx(2 * stats.t.sf(abs(t), 2)) and not compared.beyond_noise


def test_welchs_test_compares_methods_whose_seeds_differ():
    apart = _spread("a", 0.80, 0.81, 0.82)
    below = _spread("b", 0.60, 0.62, 0.61, first=3)
    mixed = _spread("c", 0.78, 0.84, 0.80, first=3)
    found = {(d.first.label, d.second.label): d for d in seed_differences([apart, below, mixed])}
    assert not found["a", "b"].paired
    assert found["a", "b"].beyond_noise and found["a", "b"].difference == pytest.approx(0.20)
    assert not found["a", "c"].beyond_noise
    # Welch's t and degrees of freedom by their formulas, against the p-value reported
    a, c = np.array([0.80, 0.81, 0.82]), np.array([0.78, 0.84, 0.80])
    va, vc = a.var(ddof=1) / 3, c.var(ddof=1) / 3
    t = (a.mean() - c.mean()) / math.sqrt(va + vc)
    freedom = (va + vc) ** 2 / (va**2 / 2 + vc**2 / 2)
    from scipy import stats

    assert found["a", "c"].p_value == pytest.approx(2 * stats.t.sf(abs(t), freedom))
    assert mixed.std == pytest.approx(float(np.std([0.78, 0.84, 0.80], ddof=1)))


def test_seeds_without_spread_and_other_splits_are_compared_as_they_can_be():
    same, other = _spread("a", 0.5, 0.5), _spread("b", 0.6, 0.6)
    assert seed_differences([same, other])[0].beyond_noise
    assert not seed_differences([same, _spread("c", 0.5, 0.5)])[0].beyond_noise
    assert seed_differences([same, _spread("d", 0.1, 0.2, split="val")]) == []
    assert seed_differences([same, _spread("e", 0.1)]) == []  # one seed: no spread to compare with
    assert not seed_differences([same, _spread("f", 0.5, 0.5, first=2)])[0].beyond_noise
    assert seed_differences([same, _spread("g", 0.6, 0.6, first=2)])[0].beyond_noise
    assert math.isnan(_spread("h", 0.3).std)


@pytest.mark.slow
def test_seeds_train_each_method_again_on_the_same_proposals_and_the_report_gives_their_spread(
    tiny_demo, tmp_path
):
    run = RunLayout(tmp_path / "run")
    config = tmp_path / "config.toml"
    config.write_text(FAST_ONLY.format(data=tiny_demo, run=run), encoding="utf-8")
    result = rcnn("run", config, "--seeds", "2")
    assert result.exit_code == 0, result.output
    replica = run.replica(1)
    assert not (replica.root / "proposals").exists() and not run.method("rcnn").root.exists()
    for layout, seed in ((run, 0), (replica, 1)):
        finetuned = read_manifest(layout.method("fast").finetune.model)
        assert finetuned is not None and finetuned["options"]["seed"] == seed
        assert str(run.proposals("trainval")) in {entry["path"] for entry in finetuned["inputs"]}
        assert (layout.method("fast").results("test", "svd")).is_file()
    weights = [layout.method("fast").detections("test").read_bytes() for layout in (run, replica)]
    assert weights[0] != weights[1]  # another seed, another detector

    found = report(run)
    maps = {(s.label, offset): value for s in found.seeds for offset, value in s.maps}
    for layout, offset in ((run, 0), (replica, 1)):
        saved = json.loads(layout.method("fast").results("test").read_text(encoding="utf-8"))
        assert maps["Fast R-CNN", offset] == saved["map"]
    assert found.replica_seconds > 0
    assert not any("seeds" in stage.artifact for stage in found.stages)
    assert "mAP of each seed" in result.output and "differences over the seeds" in result.output
    assert "±" in result.output
    assert "Training noise" in run.report_page.read_text(encoding="utf-8")

    stale = rcnn("evaluate", "--data", tiny_demo, "--split", "test", "--run", run.root, "--method", "fast")
    assert stale.exit_code == 0 and not run.method("fast").diagnosis("test").exists(), stale.output
    assert rcnn("run", config).exit_code == 0  # the evaluation as rcnn run makes it, diagnosed, again
    again = rcnn("run", config, "--seeds", "2", "--plan")
    assert again.exit_code == 0 and again.output.count("not made yet") == 0
    replanned = plan(load_config(config).replica(1))
    assert {item.state for item in replanned} == {State.UP_TO_DATE}

    changed = rcnn("run", config, "--set", "fast.finetune.iterations=5")  # the run, not its seeds
    assert changed.exit_code == 0 and "left out of the seeds" in changed.output, changed.output
    found = report(run)
    assert found.stale_replicas == (str(replica),) and found.seeds == ()


def test_fewer_than_one_seed_is_a_one_line_error(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(FAST_ONLY.format(data=tmp_path, run=tmp_path / "run"), encoding="utf-8")
    for extra in ((), ("--plan",)):
        result = rcnn("run", config, "--seeds", "0", *extra)
        assert result.exit_code == 2 and result.output.strip() == "error: --seeds 0: give at least 1"
