"""Mixed precision: the choices and their errors, bfloat16 networks close to float32 ones (and really
computing in bfloat16), training steps under autocast, and float32 left exactly as it was."""

import shutil

import numpy as np
import pytest
import torch
from torch import nn

from stages.cache.options import CacheOptions
from stages.core.errors import UserError
from stages.methods.fast.detector import FastDetector
from stages.methods.rcnn.features import RegionExtractor
from stages.methods.spp.features import SppExtractor
from stages.methods.spp.network import SppNet
from stages.networks.backbones import Classifier, build_backbone
from stages.networks.fast_rcnn import FastRcnn
from stages.networks.precision import (
    autocast,
    bf16_supported,
    check_precision,
    check_supported,
    grad_scaler,
    pooling_input,
)
from stages.runs.layout import TrainingFiles
from stages.training.options import Solver
from stages.training.solver import parameter_groups, train
from tests.helpers import assert_one_line_error, rcnn

CPU = torch.device("cpu")
needs_bf16 = pytest.mark.skipif(not bf16_supported(CPU), reason="this CPU has no bfloat16 arithmetic")

IMAGE = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
BOXES = np.array([[0, 0, 79, 59], [10.5, 8, 40, 30], [30, 20, 70, 55], [5, 5, 20, 15]], np.float32)


def relative_error(found: torch.Tensor | np.ndarray, expected: torch.Tensor | np.ndarray) -> float:
    found, expected = (torch.as_tensor(np.asarray(t), dtype=torch.float64) for t in (found, expected))
    return float((found - expected).norm() / expected.norm())


def test_unknown_precisions_are_user_errors():
    with pytest.raises(UserError, match="--precision fp8: choose fp32, bf16, fp16"):
        check_precision("fp8")
    with pytest.raises(UserError, match="--precision"):
        CacheOptions(precision="half")
    with pytest.raises(UserError, match="fp16 needs a CUDA device"):
        check_supported("fp16", CPU)


def test_fp16_training_on_a_cpu_is_a_one_line_error(tiny_run, tmp_path):
    data, base = tiny_run
    shutil.copytree(base, tmp_path / "run")
    result = rcnn(
        "finetune", "--method", "fast", "--data", data, "--run", tmp_path / "run", "--device", "cpu",
        "--precision", "fp16", "--iterations", "1",
    )  # fmt: skip
    assert_one_line_error(result, "fp16 needs a CUDA device")


def test_float32_is_left_exactly_as_it_is():
    torch.manual_seed(0)
    layer = nn.Linear(5, 3)
    x = torch.randn(4, 5)
    with autocast("fp32", CPU):
        y = layer(x)
    assert y.dtype == torch.float32 and torch.equal(y, layer(x))
    assert not grad_scaler("fp32", CPU).is_enabled() and not grad_scaler("bf16", CPU).is_enabled()
    double = torch.randn(2, 3, dtype=torch.float64)
    assert pooling_input(double) is double and pooling_input(double.bfloat16()).dtype == torch.float32


@needs_bf16
def test_bf16_region_features_are_close_to_fp32_and_stored_as_float32():
    torch.manual_seed(0)
    model = Classifier(build_backbone("tiny"), 4)
    exact = RegionExtractor(model, CPU)(IMAGE, BOXES)
    half = RegionExtractor(model, CPU, precision="bf16")(IMAGE, BOXES)
    for name in ("pool5", "fc7"):
        assert half[name].dtype == torch.float32
        assert 0 < relative_error(half[name], exact[name]) < 0.03, name  # changed, a little


@needs_bf16
def test_bf16_spp_pyramids_and_fc7_are_close_to_fp32():
    torch.manual_seed(0)
    net = SppNet(build_backbone("tiny"))
    exact = SppExtractor(net, (96,), 64, CPU, with_fc7=True)(IMAGE, BOXES)
    half = SppExtractor(net, (96,), 64, CPU, with_fc7=True, precision="bf16")(IMAGE, BOXES)
    for name in ("pyramid", "fc7"):
        assert half[name].dtype == torch.float32
        assert 0 < relative_error(half[name], exact[name]) < 0.03, name


@needs_bf16
def test_bf16_fast_rcnn_scores_and_boxes_are_close_to_fp32():
    torch.manual_seed(0)
    net = FastRcnn(build_backbone("tiny"), 3)
    exact_scores, exact_boxes = FastDetector(net, 96, 1000, CPU)(IMAGE, BOXES)
    scores, boxes = FastDetector(net, 96, 1000, CPU, precision="bf16")(IMAGE, BOXES)
    assert scores.dtype == np.float32 and boxes.dtype == exact_boxes.dtype
    assert 0 < np.abs(scores - exact_scores).max() < 0.01
    assert np.abs(boxes - exact_boxes).max() < 1.0  # pixels


@needs_bf16
def test_bf16_training_computes_in_bf16_and_keeps_float32_weights(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))
    seen = []

    def step(batch):
        x, y = batch
        logits = model(x)
        seen.append(logits.dtype)
        return nn.functional.cross_entropy(logits, y), {}

    def batches(start):
        g = torch.Generator().manual_seed(start)
        while True:
            yield torch.randn(16, 3, generator=g), torch.randint(0, 2, (16,), generator=g)

    before = model[0].weight.detach().clone()
    rows = train(
        files=TrainingFiles(tmp_path / "model.pt", tmp_path / "checkpoint.pt", tmp_path / "log.csv"),
        model=model,
        groups=parameter_groups([(model, 1, 2)], 0.0),
        solver=Solver(4, 0.1, 4, checkpoint_every=2),
        stamp={},
        batches=batches,
        step=step,
        precision="bf16",
    )
    assert seen == [torch.bfloat16] * 4 and np.isfinite(rows[-1]["loss"])
    assert model[0].weight.dtype == torch.float32 and not torch.equal(model[0].weight, before)
