"""Faster R-CNN's 4-step alternating training (section 3.2): which layers each step trains, the proposals
its Fast R-CNN steps read, and the one network with shared conv layers it ends in."""

import csv
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from stages.datasets.formats import load_dataset
from stages.methods import METHODS
from stages.methods.faster.finetune import ALTERNATING
from stages.methods.faster.minibatches import ImageBatches
from stages.methods.faster.network import FasterRcnn
from stages.methods.faster.options import FasterFinetuneOptions
from stages.networks.backbones import build_backbone
from stages.runs.layout import RunLayout
from stages.runs.steps import SharedSteps
from tests.helpers import assert_one_line_error, rcnn


def test_each_part_trains_alone_and_the_first_conv_layer_never():
    model = FasterRcnn(build_backbone("tiny"), 3)
    parts = {
        "conv": {n for n, _ in model.conv.named_parameters(prefix="conv") if not n.startswith("conv.0.")},
        "rpn": {n for n, _ in model.rpn.named_parameters(prefix="rpn")},
        "head": {
            n
            for prefix in ("fc6", "fc7", "scores", "deltas")
            for n, _ in getattr(model, prefix).named_parameters(prefix=prefix)
        },
    }
    for chosen in (("conv", "rpn"), ("conv", "head"), ("rpn",), ("head",), ("conv", "rpn", "head")):
        model.train_only(*chosen)
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        assert trainable == set().union(*(parts[p] for p in chosen)), chosen
    with pytest.raises(ValueError, match="fc8"):
        model.train_only("fc8")


def test_given_proposals_are_scaled_and_mirrored_with_the_image(tiny_demo):
    """Proposals equal to the objects, in the original image, stay equal to them in every mini-batch."""
    dataset = load_dataset(tiny_demo, "trainval")
    objects = [r.boxes[~r.difficult] for r in dataset.images]
    options = FasterFinetuneOptions(scales=(96, 128))
    batches = ImageBatches(dataset.images, options, proposals=objects, seed=5)
    flipped = 0
    for iteration in range(12):
        _, boxes, _, factor, _, proposals = batches(iteration)
        assert proposals.shape == boxes.shape and torch.allclose(proposals, boxes), iteration
        record = dataset.images[batches.image_index(iteration)]
        unmirrored = record.boxes[~record.difficult] * float(factor)
        flipped += not np.allclose(boxes.numpy(), unmirrored, atol=1e-3)
    assert flipped > 0  # some were mirrored
    plain = ImageBatches(dataset.images, replace(options, mirror=False))
    assert plain(0)[-1].shape == (0, 4)  # joint training's batches carry none


def test_a_run_clears_and_resumes_every_step_of_the_alternating_scheme(tmp_path):
    """``rcnn run`` sees an interrupted step's checkpoint, and clears every step's before starting over."""
    options = FasterFinetuneOptions(scheme="alternating")
    assert tuple(step.name for step in ALTERNATING) == options.training_parts
    run = RunLayout(tmp_path)
    step = METHODS["faster"].finetune_step(options, SharedSteps(run, "trainval", "test"), ())
    files = run.method("faster").finetune
    assert files.part("step3").checkpoint in step.partial
    assert files.part("step3").checkpoint.parent in step.stale and files.checkpoint in step.stale
    joint = METHODS["faster"].finetune_step(replace(options, scheme="joint"), SharedSteps(run, "a", "b"), ())
    assert joint.partial == (files.checkpoint,)


@pytest.mark.slow
def test_alternating_training_ends_in_one_network_with_shared_conv_layers(tiny_run, tmp_path):
    data, base = tiny_run
    run = tmp_path / "run"
    shutil.copytree(base, run)
    files = RunLayout(run).method("faster").finetune
    train = ("finetune", "--method", "faster", "--data", data, "--run", run, "--scales", "96")
    train = (*train, "--anchor-sizes", "16,32,64", "--iterations", "6", "--checkpoint-every", "3")
    result = rcnn(*train, "--scheme", "alternating")
    assert result.exit_code == 0 and "fine-tuned (faster, 1 process)" in result.output, result.output
    steps = {
        name: torch.load(files.part(name).checkpoint, weights_only=True)["model"]
        for name in ("step1", "step2", "step3", "step4")
    }
    final = torch.load(files.model, weights_only=True)["state_dict"]

    def same(a, b, prefix):
        names = [n for n in a if n.startswith(prefix)]
        return bool(names) and all(torch.equal(a[n], b[n]) for n in names)

    assert same(steps["step2"], final, "conv.") and same(steps["step3"], final, "rpn.")
    assert same(steps["step2"], steps["step3"], "fc6.") and same(steps["step2"], steps["step3"], "scores.")
    assert not same(steps["step1"], steps["step2"], "conv.3.")  # two networks until step 3
    assert not same(steps["step3"], steps["step4"], "fc7.")  # step 4 tunes the head
    assert same(steps["step1"], steps["step4"], "conv.0.")  # conv1 stays the backbone's
    for name, columns in (("step1", {"rpn_cls_loss"}), ("step2", {"cls_loss", "accuracy"})):
        with open(files.part(name).log) as rows:
            log = list(csv.DictReader(rows))
        assert [int(r["iteration"]) for r in log] == [6] and columns <= set(log[0]), name
    assert not files.log.exists()  # joint training's
    assert_one_line_error(rcnn(*train, "--scheme", "four-step"), "--scheme", "four-step")
