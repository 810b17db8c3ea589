"""The stages under ``torchrun`` with two gloo processes on CPU: each artifact equals one process's, array
by array, and a two-process run killed midway resumes to the same result.

The tiny test split has 3 images: the processes take 2 and 1 of them (exact shards, no image twice).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from stages.runs.layout import RunLayout, read_manifest
from stages.runs.processes import Processes
from tests.helpers import ROOT, killed, rcnn, run_steps

pytestmark = pytest.mark.slow  # torchrun, SIGKILL or a whole chain: `make test-quick` leaves it out

SEARCH = ("--workers", "1", "--max-side", "160")
"""The tiny run's selective-search settings (``tiny_run``)."""


GROWTH = ("bytes",)
"""A cache's size in bytes depends on how HDF5 placed its compressed chunks as the file grew (image by
image, or part by part in a merge), not on what it holds."""


def torchrun(*args, module: str = "rcnn_cli", expect: int = 0) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node=2 -m MODULE -- ARGS`` on this machine, one thread a process."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", module, "--", *map(str, args),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == expect, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def trained(tiny_run, tmp_path_factory) -> tuple[Path, Path]:
    """(dataset, run): the tiny run with every method briefly trained and evaluated on the test split by
    one process; copy before use."""
    data, base = tiny_run
    run = tmp_path_factory.mktemp("distributed") / "run"
    shutil.copytree(base, run)
    on, short = ("--data", data), ("--iterations", "3", "--checkpoint-every", "3")
    spp, scales = ("--method", "spp", *on), ("--scales", "96")
    run_steps(
        run,
        ("finetune", "--method", "rcnn", *on, *short),
        ("extract-features", "--method", "rcnn", *on, "--split", "trainval"),
        ("extract-features", "--method", "rcnn", *on, "--split", "test"),
        ("train-svm", "--method", "rcnn"),
        ("train-bbox", "--method", "rcnn"),
        ("evaluate", "--method", "rcnn", *on, "--split", "test"),
        ("extract-features", *spp, *scales, "--split", "trainval", "--before-finetuning"),
        ("finetune", *spp, *short, "--learning-rate", "0.01"),
        ("extract-features", *spp, *scales, "--split", "trainval"),
        ("extract-features", *spp, *scales, "--split", "test"),
        ("finetune", "--method", "fast", *on, "--scales", "96", *short),
        ("evaluate", "--method", "fast", *on, "--split", "test"),
        ("finetune", "--method", "faster", *on, "--scales", "96", *short),
        ("evaluate", "--method", "faster", *on, "--split", "test"),
    )
    return data, run


def copied(trained, tmp_path: Path) -> tuple[Path, Path, RunLayout]:
    """The dataset, a copy of the trained run, and the original's layout (the single process's results)."""
    data, run = trained
    shutil.copytree(run, tmp_path / "run")
    return data, tmp_path / "run", RunLayout(run)


def assert_same_cache(made: Path, expected: Path) -> None:
    """Two caches hold the same columns, equal to the bit, and the same attributes (the stamp's input
    files compared by name, size and time: the runs are copies in two folders)."""
    with h5py.File(made) as a, h5py.File(expected) as b:
        assert sorted(a) == sorted(b)
        for name in b:
            assert a[name].dtype == b[name].dtype, name
            np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=name)
        assert without_folders(dict(a.attrs)) == without_folders(dict(b.attrs))


def without_folders(attrs: dict) -> dict:
    """``attrs`` with the stamp's paths reduced to file names."""
    if "stamp" not in attrs:
        return attrs
    stamp = json.loads(attrs["stamp"])
    for value in stamp.values():
        for key in ("path", "weights"):
            if isinstance(value, dict) and isinstance(value.get(key), str):
                value[key] = Path(value[key]).name
    return {**attrs, "stamp": stamp}


def assert_same_manifest(made: Path, expected: Path, *, differ: tuple[str, ...] = ()) -> None:
    """Two manifests record the same stage, options, inputs (by name and size) and results, but for the
    results ``differ`` (what the processes change: their count, seconds)."""
    a, b = read_manifest(made), read_manifest(expected)
    assert a["stage"] == b["stage"] and a["options"] == b["options"]
    assert [(Path(i["path"]).name, i["bytes"]) for i in a["inputs"]] == [
        (Path(i["path"]).name, i["bytes"]) for i in b["inputs"]
    ]
    kept = {k: v for k, v in a["results"].items() if k not in differ}
    assert kept == {k: v for k, v in b["results"].items() if k not in differ}


def test_proposals_of_two_processes_equal_one_process_s(trained, tmp_path):
    data, run, single = copied(trained, tmp_path)
    target = RunLayout(run).proposals("trainval")
    target.unlink()
    done = torchrun("propose", "--data", data, "--split", "trainval", "--run", run, *SEARCH)
    assert_same_cache(target, single.proposals("trainval"))
    assert_same_manifest(target, single.proposals("trainval"), differ=("processes", "images_per_second"))
    assert read_manifest(target)["results"]["processes"] == 2
    assert "2 x 1 workers" in done.stdout + done.stderr  # rank 0's progress counts both shards
    assert not RunLayout(run).proposal_parts("trainval").exists()


@pytest.mark.parametrize("method", ["rcnn", "spp"])
def test_a_feature_cache_of_two_processes_equals_one_process_s(trained, tmp_path, method):
    """R-CNN's warped crops and SPP-net's pyramids of the test split (fine-tuned fc7 for both)."""
    data, run, single = copied(trained, tmp_path)
    target = RunLayout(run).method(method).features("test")
    target.unlink()
    scales = ("--scales", "96") if method == "spp" else ()
    torchrun("extract-features", "--method", method, "--data", data, "--split", "test", "--run", run, *scales)
    expected = single.method(method).features("test")
    assert_same_cache(target, expected)
    assert_same_manifest(target, expected, differ=GROWTH)
    assert not any(target.parent.glob(".*"))  # neither parts nor progress counts are left


@pytest.mark.parametrize("method", ["rcnn", "fast", "faster"])
def test_an_evaluation_of_two_processes_equals_one_process_s(trained, tmp_path, method):
    data, run, single = copied(trained, tmp_path)
    files, expected = RunLayout(run).method(method), single.method(method)
    files.detections("test").unlink()
    files.results("test").unlink()
    torchrun("evaluate", "--method", method, "--data", data, "--split", "test", "--run", run)
    assert files.detections("test").read_bytes() == expected.detections("test").read_bytes()
    timed = ("seconds_per_image", *(f"{part}_seconds_per_image" for part in ("conv", "proposals", "fc")))
    results, reference = (json.loads(p.results("test").read_text()) for p in (files, expected))
    assert {k: v for k, v in results.items() if k not in timed} == {
        k: v for k, v in reference.items() if k not in timed
    }
    assert_same_manifest(files.results("test"), expected.results("test"))


@pytest.mark.parametrize("scheme", ["joint", "alternating"])
def test_faster_rcnn_trains_on_two_processes_by_either_scheme(trained, tmp_path, scheme):
    """Every step data-parallel (the alternating scheme's proposals made by both processes, half the
    images each); the processes end with the same weights (``TrainingStage.agreed_weights``)."""
    data, run, _ = copied(trained, tmp_path)
    files = RunLayout(run).method("faster").finetune
    shutil.rmtree(files.model.parent)
    train = ("finetune", "--method", "faster", "--data", data, "--run", run, "--scales", "96")
    torchrun(*train, "--iterations", "2", "--scheme", scheme)
    results = read_manifest(files.model)["results"]
    assert results["world_size"] == 2 and len(set(results["rank_weight_digests"])) == 1
    steps = ["step1", "step2", "step3", "step4"] if scheme == "alternating" else []
    assert sorted(p.name for p in files.model.parent.iterdir() if p.is_dir()) == steps


def test_detect_on_many_images_with_two_processes_equals_one_process_s(trained, tmp_path):
    data, run, _ = copied(trained, tmp_path)
    images = sorted((data / "JPEGImages").glob("*.jpg"))[:3]
    common = ("detect", *images, "--run", run, "--method", "fast", "--score-thresh", "-100")
    single = rcnn(*common, "--out", tmp_path / "one", "--save-json", tmp_path / "one.json")
    assert single.exit_code == 0, single.output
    torchrun(
        *common,
        "--out",
        tmp_path / "two",
        "--save-json",
        tmp_path / "two.json",
        "--grid",
        tmp_path / "grid.png",
    )
    assert (tmp_path / "two.json").read_bytes() == (tmp_path / "one.json").read_bytes()
    assert (tmp_path / "grid.png").is_file()
    for image in images:
        for suffix in (".png", ".json"):
            name = image.stem + suffix
            assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()
    assert not any((tmp_path / "two").glob(".*"))


def test_a_killed_two_process_search_resumes_to_one_process_s_proposals(trained, tmp_path):
    """SIGKILL once a process has saved its first one-image part: torchrun stops the other process too;
    the rerun searches only the rest."""
    data, run, single = copied(trained, tmp_path)
    layout = RunLayout(run)
    layout.proposals("test").unlink()
    stage = ("propose", "--data", data, "--split", "test", "--run", run, *SEARCH)
    kill = ("stages.runs.processes:ImageParts.flush", "1", "stages.runs.processes:PART_IMAGES=1")
    torchrun(*kill, "--", *stage, module="tests.kill_midway", expect=1)
    assert any(layout.proposal_parts("test").glob("part-*.npz"))
    torchrun(*stage)
    assert_same_cache(layout.proposals("test"), single.proposals("test"))


def test_a_killed_two_process_extraction_resumes_to_one_process_s_cache(trained, tmp_path):
    data, run, single = copied(trained, tmp_path)
    target = RunLayout(run).method("rcnn").features("test")
    target.unlink()
    stage = ("extract-features", "--method", "rcnn", "--data", data, "--split", "test", "--run", run)
    torchrun("stages.cache.files:CacheWriter.append", "1", "--", *stage, module="tests.kill_midway", expect=1)
    assert any(target.parent.glob(".test.parts/*"))
    torchrun(*stage)
    assert_same_cache(target, single.method("rcnn").features("test"))


def test_shards_are_exact_and_in_order():
    for count in range(12):
        for world in (1, 2, 3, 5):
            shards = [Processes(rank, world).shard(count) for rank in range(world)]
            assert [i for shard in shards for i in shard] == list(range(count))
            assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_a_killed_detect_on_many_images_resumes_to_the_same_detections(trained, tmp_path):
    """One process killed once two images are saved (one-image parts): the rerun detects the third only."""
    data, run, _ = copied(trained, tmp_path)
    images = sorted((data / "JPEGImages").glob("*.jpg"))[:3]
    common = ("detect", *images, "--run", run, "--method", "fast", "--score-thresh", "-100")
    killed(
        "stages.runs.processes:ImageParts.flush", 2, *common, "--out", tmp_path / "killed",
        settings=("stages.runs.processes:PART_IMAGES=1",),
    )  # fmt: skip
    assert len(list((tmp_path / "killed" / ".detect.parts").glob("part-*.npz"))) == 2
    for name, out in (("resumed", "killed"), ("straight", "straight")):
        done = rcnn(*common, "--out", tmp_path / out, "--save-json", tmp_path / f"{name}.json")
        assert done.exit_code == 0, done.output
    assert (tmp_path / "resumed.json").read_bytes() == (tmp_path / "straight.json").read_bytes()
    assert not (tmp_path / "killed" / ".detect.parts").exists()
