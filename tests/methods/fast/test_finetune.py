"""Fast R-CNN's training options, and data-parallel training with torchrun."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stages.core.errors import UserError
from stages.methods.fast.options import FastFinetuneOptions, SamplingOptions
from tests.helpers import assert_one_line_error, rcnn


@pytest.mark.parametrize(
    ("sampling", "test_scale", "option"),
    [
        (SamplingOptions(scales=(1200,), max_size=1000), None, "--scales"),
        (SamplingOptions(scales=(600,), max_size=1000), 1200, "--test-scale"),
        (SamplingOptions(scales=(300, 400), max_size=500), None, "--test-scale"),  # the default 600
        (SamplingOptions(images_per_batch=4, rois_per_batch=2), None, "--images-per-batch"),
    ],
)
def test_inconsistent_training_options_are_user_errors(sampling, test_scale, option):
    with pytest.raises(UserError, match=option):
        FastFinetuneOptions(sampling=sampling, test_scale=test_scale)
    assert (
        FastFinetuneOptions(sampling=SamplingOptions(max_size=1666), test_scale=1000).resolved_test_scale
        == 1000
    )


def test_a_bad_first_trainable_layer_stops_finetune_before_any_data_is_read(tiny_demo, tmp_path):
    """``--trainable-from`` takes the backbone's conv layers and fc6 only; a wrong name is a one-line error
    before the proposals (the run has none) are read, and nothing is written."""
    run = tmp_path / "run"
    args = ("--data", tiny_demo, "--run", run, "--weights", "random", "--backbone", "tiny", "--device", "cpu")
    result = rcnn("finetune", "--method", "fast", *args, "--trainable-from", "conv3_1")
    assert_one_line_error(result, "--trainable-from conv3_1", "not a layer of tiny", "conv5, fc6")
    assert not (run / "fast" / "finetune" / "checkpoint.pt").exists()


@pytest.mark.slow
def test_two_gloo_processes_end_with_the_same_weights_and_resume_exactly(tiny_run, tmp_path):
    """torchrun with two CPU processes: DDP over gloo, disjoint shards, one writer, equal final weights;
    a run stopped at its checkpoint of iteration 2 and continued to 4 ends where one run straight to 4
    does (the checkpoint keeps both processes' random generators).

    ``--`` ends torchrun's own options: its parser (Python 3.11 argparse) would read ``--run`` as an
    abbreviation of its ``--run-path``."""
    data, base = tiny_run

    def torchrun(run: Path, iterations: int) -> str:
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            "-m", "rcnn_cli", "--", "finetune", "--data", str(data), "--run", str(run), "--device", "cpu",
            "--iterations", str(iterations), "--scales", "96", "--checkpoint-every", "2",
        ]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=Path.cwd())
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    for run in (straight, resumed):
        shutil.copytree(base, run)
    output = torchrun(straight, 4)
    manifest = json.loads((straight / "fast" / "finetune" / "model.manifest.json").read_text())
    digests = manifest["results"]["rank_weight_digests"]
    assert manifest["results"]["world_size"] == 2 and len(digests) == 2 and digests[0] == digests[1]
    assert output.count("fine-tuned (fast, 2 processes)") == 1  # one writer
    torchrun(resumed, 2)
    torchrun(resumed, 4)
    continued = json.loads((resumed / "fast" / "finetune" / "model.manifest.json").read_text())
    assert continued["results"]["rank_weight_digests"] == digests
