"""The CUDA paths against the CPU's: RoI and pyramid pooling with their gradients, the proposal layer's NMS,
and a Fast R-CNN training step in each precision (fp16 with loss scaling). They run on a machine with a
CUDA device (`rcnn bench gpu-check` runs them, `pytest -m cuda`) and skip elsewhere."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stages.methods.faster.rpn import propose
from stages.methods.spp.pooling import spatial_pyramid_pool
from stages.networks.backbones import build_backbone
from stages.networks.fast_rcnn import FastRcnn, fold_target_normalisation, multitask_loss
from stages.networks.precision import autocast, check_supported, grad_scaler
from stages.runs.devices import pick_device

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
]

CUDA = torch.device("cuda") if torch.cuda.is_available() else None


def _windows(count: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """(count, 4) inclusive cells inside a (height, width) map."""
    x1 = torch.randint(0, width - 2, (count,), generator=generator)
    y1 = torch.randint(0, height - 2, (count,), generator=generator)
    x2 = torch.minimum(x1 + torch.randint(1, width, (count,), generator=generator), torch.tensor(width - 1))
    y2 = torch.minimum(y1 + torch.randint(1, height, (count,), generator=generator), torch.tensor(height - 1))
    return torch.stack([x1, y1, x2, y2], dim=1).float()


def test_the_device_is_cuda_where_there_is_one():
    assert pick_device("auto").type == "cuda" and pick_device("cuda").type == "cuda"


def test_the_box_targets_normalisation_folds_into_a_network_on_the_device():
    """Fast R-CNN's last step of training: found broken on the first GPU check (a CPU tensor)."""
    model = FastRcnn(build_backbone("tiny"), 3).to(CUDA)
    weight, bias = model.deltas.weight.detach().clone(), model.deltas.bias.detach().clone()
    fold_target_normalisation(model, np.ones((4, 4)), np.full((4, 4), 2.0))
    assert torch.allclose(model.deltas.weight, weight * 2) and torch.allclose(model.deltas.bias, bias * 2 + 1)


def test_the_spatial_pyramid_and_its_gradient_are_the_cpus():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 16, 13, 17, generator=generator, requires_grad=True)
    cells = _windows(40, 13, 17, generator)
    index = torch.randint(0, 2, (40,), generator=generator)
    expected = spatial_pyramid_pool(features, cells, index)
    expected.sum().backward()
    on_cuda = features.detach().to(CUDA).requires_grad_(True)
    found = spatial_pyramid_pool(on_cuda, cells.to(CUDA), index.to(CUDA))
    found.sum().backward()
    assert torch.allclose(found.cpu(), expected) and on_cuda.grad is not None and features.grad is not None
    assert torch.allclose(on_cuda.grad.cpu(), features.grad)


def test_the_proposal_layer_keeps_the_cpus_boxes():
    generator = torch.Generator().manual_seed(1)
    corners = torch.rand(3000, 2, generator=generator) * 500
    anchors = torch.cat([corners, corners + 32 + torch.rand(3000, 2, generator=generator) * 128], dim=1)
    logits = torch.randn(3000, generator=generator)
    deltas = torch.randn(3000, 4, generator=generator) * 0.1
    expected = propose(anchors, logits, deltas, (600, 800), pre_nms=2000, post_nms=300)
    found = propose(*(t.to(CUDA) for t in (anchors, logits, deltas)), (600, 800), pre_nms=2000, post_nms=300)
    assert torch.allclose(found[0].cpu(), expected[0], atol=1e-3)
    assert torch.allclose(found[1].cpu(), expected[1], atol=1e-5)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_fast_rcnn_training_steps_in_each_precision_lower_the_loss_of_their_batch(precision):
    """Steps in ``precision`` (fp16's loss scaled) on one batch: the fp32 loss of that batch, the network
    in eval mode before and after, falls, and every step's loss is finite."""
    assert CUDA is not None
    check_supported(precision, CUDA)
    torch.manual_seed(0)
    model = FastRcnn(build_backbone("tiny"), 3).to(CUDA)
    model.freeze_early_layers()
    optimiser = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.001, momentum=0.9)
    scaler = grad_scaler(precision, CUDA)
    images = torch.randn(2, 3, 160, 200, device=CUDA)
    rois = torch.tensor(
        [[0, 10, 10, 90, 90], [0, 40, 30, 150, 120], [1, 5, 5, 60, 100], [1, 80, 20, 190, 150]]
    )
    rois = rois.float().to(CUDA)
    labels = torch.tensor([1, 0, 2, 3], device=CUDA)
    targets = torch.zeros(4, 4, device=CUDA)

    def batch_loss() -> float:
        model.eval()
        with torch.no_grad():
            loss = multitask_loss(*model(images, rois), labels, targets)[0].item()
        model.train()
        return loss

    before, losses = batch_loss(), []
    for _ in range(30):
        optimiser.zero_grad()
        with autocast(precision, CUDA):
            scores, box_deltas = model(images, rois)
            loss = multitask_loss(scores.float(), box_deltas.float(), labels, targets)[0]
        scaler.scale(loss).backward()
        scaler.step(optimiser)
        scaler.update()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and batch_loss() < before
