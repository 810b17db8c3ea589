"""Interruptions: a real subprocess is killed with SIGKILL in the middle of a stage, the stage is run
again, and what it ends with equals an uninterrupted run's, array by array and tensor by tensor.

``tests.kill_midway`` kills the process right after a chosen library call has returned (a proposals shard
written, a feature cache image appended, a training checkpoint saved), so the interruption lands at the
same point on any machine.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from stages.proposals.propose import read_proposals
from stages.runs.layout import RunLayout
from tests.helpers import CHECKPOINT_SAVED, killed, rcnn, run_steps

pytestmark = pytest.mark.slow  # torchrun, SIGKILL or a whole chain: `make test-quick` leaves it out

TRAINING = ("--iterations", "6", "--checkpoint-every", "3")


@pytest.fixture(scope="module")
def base(tiny_run, tmp_path_factory) -> tuple[Path, Path]:
    """(dataset, run) with proposals, the backbone and SPP-net's pyramid cache; copy before use."""
    data, run = tiny_run
    copy = tmp_path_factory.mktemp("interrupted") / "run"
    shutil.copytree(run, copy)
    first_pass = ("--split", "trainval", "--scales", "96", "--before-finetuning")
    run_steps(copy, ("extract-features", "--method", "spp", "--data", data, *first_pass))
    return data, copy


def twins(base, tmp_path) -> tuple[Path, Path, Path]:
    """The dataset and two copies of the base run: one to interrupt, one to run straight through."""
    data, run = base
    for name in ("killed", "straight"):
        shutil.copytree(run, tmp_path / name)
    return data, tmp_path / "killed", tmp_path / "straight"


def assert_same_weights(a: Path, b: Path) -> None:
    first, second = (torch.load(p, map_location="cpu", weights_only=True) for p in (a, b))
    assert first.keys() == second.keys()
    for key, value in first.items():
        if key == "state_dict":
            assert value.keys() == second[key].keys()
            for name, tensor in value.items():
                assert torch.equal(tensor, second[key][name]), name
        else:
            assert value == second[key], key


FASTER = ("finetune", "--method", "faster", "--scales", "96")


@pytest.mark.parametrize(
    "files,command,checkpoints",
    [
        (lambda r: r.pretrain, ("pretrain", "--batch-size", "32"), 1),
        (lambda r: r.method("rcnn").finetune, ("finetune", "--method", "rcnn"), 1),
        (lambda r: r.method("spp").finetune, ("finetune", "--method", "spp", "--learning-rate", "0.01"), 1),
        (lambda r: r.method("fast").finetune, ("finetune", "--method", "fast", "--scales", "96"), 1),
        (lambda r: r.method("faster").finetune, FASTER, 1),
        # the fifth checkpoint: steps 1 and 2 done, step 3 at iteration 3
        (lambda r: r.method("faster").finetune.part("step3"), (*FASTER, "--scheme", "alternating"), 5),
    ],
    ids=["pretrain", "rcnn", "spp", "fast", "faster", "faster-alternating"],
)
def test_a_killed_training_stage_resumes_bit_identically(base, tmp_path, files, command, checkpoints):
    """Killed after a checkpoint at iteration 3 of 6, resumed: the same weights and log as a run straight
    through (dropout masks included: the checkpoint keeps the random generators)."""
    data, interrupted, straight = twins(base, tmp_path)
    if command[0] == "pretrain":  # the base run's backbone is pre-trained already: start over
        for run in (interrupted, straight):
            shutil.rmtree(run / "pretrain")
    stage = (*command, *TRAINING, "--data", data)
    killed(CHECKPOINT_SAVED, checkpoints, *stage, "--run", interrupted)
    checkpoint = files(RunLayout(interrupted)).checkpoint
    assert torch.load(checkpoint, weights_only=True)["iteration"] == 3
    result = rcnn(*stage, "--run", interrupted)
    assert result.exit_code == 0 and "resuming" in result.output, result.output
    run_steps(straight, stage)
    finished, reference = files(RunLayout(interrupted)), files(RunLayout(straight))
    assert_same_weights(finished.model, reference.model)
    assert finished.log.read_text() == reference.log.read_text()


def test_a_killed_propose_resumes_to_the_same_proposals(base, tmp_path):
    data, interrupted, straight = twins(base, tmp_path)
    stage = ("propose", "--data", data, "--split", "test", "--workers", "1", "--max-side", "160")
    killed(
        "stages.runs.processes:ImageParts.flush",
        2,
        *stage,
        "--run",
        interrupted,
        settings=("stages.runs.processes:PART_IMAGES=1",),
    )
    result = rcnn(*stage, "--run", interrupted)
    assert result.exit_code == 0 and "2 of 3 images already done" in result.output, result.output
    run_steps(straight, stage)
    resumed, reference = (read_proposals(RunLayout(r).proposals("test")) for r in (interrupted, straight))
    assert list(resumed) == list(reference)
    for image_id, boxes in reference.items():
        np.testing.assert_array_equal(resumed[image_id], boxes)


def test_a_killed_feature_extraction_resumes_to_the_same_cache(base, tmp_path):
    data, interrupted, straight = twins(base, tmp_path)
    for run in (interrupted, straight):
        run_steps(run, ("finetune", "--method", "rcnn", "--data", data, "--iterations", "2"))
    stage = ("extract-features", "--method", "rcnn", "--data", data, "--split", "trainval")
    killed("stages.cache.files:CacheWriter.append", 2, *stage, "--run", interrupted)
    result = rcnn(*stage, "--run", interrupted)
    assert result.exit_code == 0 and "resuming: 2 of 5 images already cached" in result.output, result.output
    run_steps(straight, stage)
    paths = [RunLayout(r).method("rcnn").features("trainval") for r in (interrupted, straight)]
    with h5py.File(paths[0]) as resumed, h5py.File(paths[1]) as reference:
        assert set(resumed) == set(reference)
        for name in reference:
            np.testing.assert_array_equal(resumed[name][:], reference[name][:], err_msg=name)
