"""Fast R-CNN's network: RoI pooling against the release's rules and the paper's backward formula, the
multi-task loss against its equations, target normalisation, truncated SVD, layer freezing."""

import math

import numpy as np
import pytest
import torch

from stages.core.errors import UserError
from stages.methods.fast.network import load_fast, save_fast
from stages.networks.backbones import build_backbone
from stages.networks.fast_rcnn import (
    FastRcnn,
    compress,
    fold_target_normalisation,
    low_rank_linear,
    multitask_loss,
    pooling_rois,
)
from stages.runs.layout import write_manifest


def round_half_away(x: float) -> int:
    """C's round(), which the release (and torchvision) use for the RoI corners."""
    return math.floor(abs(x) + 0.5) * (1 if x >= 0 else -1)


def reference_roi_pool(features: np.ndarray, roi, size: int, scale: float):
    """Slow RoI max pooling by the release's rules: (C, H, W) map, (x1, y1, x2, y2) RoI in input pixels
    -> ((C, size, size) maxima, the same shape of flat argmax indices, -1 for empty bins)."""
    channels, height, width = features.shape
    x1, y1, x2, y2 = (round_half_away(v * scale) for v in roi)
    roi_w, roi_h = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
    out = np.zeros((channels, size, size))
    where = -np.ones((channels, size, size), dtype=np.int64)
    for i in range(size):
        top = min(max(math.floor(i * roi_h / size) + y1, 0), height)
        bottom = min(max(math.ceil((i + 1) * roi_h / size) + y1, 0), height)
        for j in range(size):
            left = min(max(math.floor(j * roi_w / size) + x1, 0), width)
            right = min(max(math.ceil((j + 1) * roi_w / size) + x1, 0), width)
            if bottom <= top or right <= left:
                continue
            for c in range(channels):
                window = features[c, top:bottom, left:right]
                r, q = np.unravel_index(np.argmax(window), window.shape)
                out[c, i, j] = window[r, q]
                where[c, i, j] = (top + r) * width + (left + q)
    return out, where


def tiny_net(classes: int = 3) -> FastRcnn:
    torch.manual_seed(0)
    return FastRcnn(build_backbone("tiny"), classes).eval()


ROIS = [(0, 0, 63, 47), (10.4, 7.6, 30.2, 29.9), (40, 30, 41, 31), (-20, -8, 20, 12), (60, 40, 200, 90)]


def test_roi_pooling_follows_the_release_rules():
    net = tiny_net()
    features = torch.randn(1, 128, 5, 6)
    rois = torch.tensor([[0.0, *r] for r in ROIS])
    pooled = net.pool(features, rois).view(len(ROIS), 128, 2, 2)
    for k, roi in enumerate(ROIS):
        expected, _ = reference_roi_pool(features[0].double().numpy(), roi, 2, 1 / 16)
        np.testing.assert_allclose(pooled[k].numpy(), expected, rtol=0, atol=1e-6)


def test_roi_pooling_backward_is_the_papers_sum_over_argmax_bins():
    """dL/dx_i = sum over RoIs r and bins j of [i = argmax(r, j)] dL/dy_rj (section 2.3)."""
    features = torch.randn(1, 4, 6, 7, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0.0, *r] for r in ROIS], dtype=torch.float64)
    from torchvision.ops import roi_pool

    pooled = roi_pool(features, rois, (3, 3), 1 / 16)
    upstream = torch.randn_like(pooled)
    (pooled * upstream).sum().backward()
    expected = np.zeros(4 * 6 * 7)
    for k, roi in enumerate(ROIS):
        _, where = reference_roi_pool(features[0].detach().numpy(), roi, 3, 1 / 16)
        for c in range(4):
            for index, grad in zip(where[c].ravel(), upstream[k, c].numpy().ravel(), strict=True):
                if index >= 0:
                    expected[c * 42 + index] += grad
    np.testing.assert_allclose(features.grad[0].numpy().ravel(), expected, atol=1e-12)


def test_roi_pooling_gradcheck():
    from torchvision.ops import roi_pool

    features = torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 0, 0, 60, 60], [1, 8, 8, 50, 40], [1, 20, 0, 79, 30]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda f: roi_pool(f, rois, (2, 2), 1 / 16), (features,))


def test_pooling_rois_convert_to_the_releases_inclusive_corners():
    boxes = torch.tensor([[0.0, 0.0, 16.0, 32.0], [10.0, 20.0, 30.0, 40.0]])
    rois = pooling_rois(boxes, torch.tensor([0, 1]), 1.5)
    expected = [[0, 0, 0, 15 * 1.5, 31 * 1.5], [1, 15, 30, 29 * 1.5, 39 * 1.5]]
    np.testing.assert_allclose(rois.numpy(), expected)


def test_forward_shapes_and_multitask_loss_equations():
    net = tiny_net(classes=3).train()
    images = torch.randn(2, 3, 64, 80)
    rois = torch.tensor([[0, 0, 0, 40, 40], [0, 8, 8, 60, 50], [1, 0, 0, 79, 63], [1, 30, 20, 50, 40]])
    scores, deltas = net(images, rois.float())
    assert scores.shape == (4, 4) and deltas.shape == (4, 4, 4)
    labels = torch.tensor([2, 0, 1, 3])
    targets = torch.tensor([[0.5, -2.0, 0.1, 0.0], [9, 9, 9, 9], [1.5, 0.0, -0.3, 3.0], [0.2, 0.2, 0.2, 0.2]])
    loss, parts = multitask_loss(scores, deltas, labels, targets, box_weight=2.0)

    def smooth_l1(x: float) -> float:
        return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5

    log_loss = sum(-torch.log_softmax(scores[r], 0)[labels[r]].item() for r in range(4)) / 4
    box_loss = (
        sum(
            smooth_l1((deltas[r, labels[r], i] - targets[r, i]).item())
            for r in range(4)
            if labels[r] >= 1
            for i in range(4)
        )
        / 4
    )
    assert parts["cls_loss"] == pytest.approx(log_loss, rel=1e-5)
    assert parts["box_loss"] == pytest.approx(box_loss, rel=1e-5)
    assert loss.item() == pytest.approx(log_loss + 2.0 * box_loss, rel=1e-5)
    loss.backward()
    assert net.deltas.weight.grad[0:4].abs().sum() == 0  # background's regressor is never trained


def test_folding_the_normalisation_makes_raw_deltas():
    net = tiny_net(classes=2)
    pooled = torch.randn(5, 512)
    means = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    stds = np.random.default_rng(1).uniform(0.1, 0.3, (3, 4)).astype(np.float32)
    with torch.no_grad():
        _, normalised = net.head(pooled)
        fold_target_normalisation(net, means, stds)
        _, raw = net.head(pooled)
    np.testing.assert_allclose(raw.numpy(), normalised.numpy() * stds + means, rtol=1e-5, atol=1e-6)


def test_truncated_svd_keeps_the_largest_singular_values():
    torch.manual_seed(0)
    layer = torch.nn.Linear(40, 30)
    x = torch.randn(7, 40)
    with torch.no_grad():
        full = low_rank_linear(layer, 30)
        np.testing.assert_allclose(full(x).numpy(), layer(x).numpy(), atol=1e-5)
        thin = low_rank_linear(layer, 10)
        singular = torch.linalg.svdvals(layer.weight.double())
        product = (thin[1].weight @ thin[0].weight).double()
        error = torch.linalg.matrix_norm(layer.weight.double() - product)
    assert error.item() == pytest.approx(torch.sqrt((singular[10:] ** 2).sum()).item(), rel=1e-6)
    assert thin[0].bias is None and sum(p.numel() for p in thin.parameters()) == 10 * 40 + 30 * 10 + 30


def test_compressed_model_round_trips_and_stays_close(tmp_path, monkeypatch):
    net = tiny_net(classes=2)
    small = compress(net, (500, 500)).eval()
    assert small.ranks == (500, 500)
    pooled = torch.randn(6, 512)
    with torch.no_grad():
        np.testing.assert_allclose(small.head(pooled)[0].numpy(), net.head(pooled)[0].numpy(), atol=2e-2)
    path = tmp_path / "model.pt"
    save_fast(path, small, ["a", "b"], test_scale=600, max_size=1000, scales=[600])
    write_manifest(path, stage="compress", options={}, inputs=[], seconds=0.0)
    with monkeypatch.context() as patched:  # the factors load as saved: no SVD (AlexNet's took 95 s)
        patched.setattr(torch.linalg, "svd", lambda *args, **kwargs: pytest.fail("an SVD while loading"))
        loaded = load_fast(path, "rcnn compress", ["a", "b"])
    assert loaded.meta["ranks"] == [500, 500] and loaded.meta["test_scale"] == 600
    with torch.no_grad():
        np.testing.assert_allclose(
            loaded.module.eval().head(pooled)[1].numpy(), small.head(pooled)[1].numpy()
        )
    with pytest.raises(UserError, match="fc6-rank 512"):
        compress(net, (512, 10))


@pytest.mark.parametrize(("name", "frozen", "trained"), [("tiny", 1, 4), ("vgg16", 4, 9)])
def test_layers_before_the_papers_cut_off_are_frozen(name, frozen, trained):
    net = FastRcnn(build_backbone(name), 2)
    net.freeze_early_layers()
    convs = [m for m in net.conv if isinstance(m, torch.nn.Conv2d)]
    assert [c.weight.requires_grad for c in convs] == [False] * frozen + [True] * trained
    assert all(p.requires_grad for p in (*net.fc6.parameters(), *net.scores.parameters()))


@pytest.mark.parametrize(
    ("first", "frozen"), [(None, 1), ("conv1", 0), ("conv3", 2), ("conv5", 4), ("fc6", 5)]
)
def test_the_first_trainable_layer_can_be_chosen(first, frozen):
    """Section 4.5's ablation (table 5): fine-tune from any conv layer, or from fc6 with every conv layer
    frozen; None is the backbone's own cut-off (conv2 for tiny)."""
    net = FastRcnn(build_backbone("tiny"), 2)
    net.freeze_early_layers(first)
    convs = [m for m in net.conv if isinstance(m, torch.nn.Conv2d)]
    trained = [c.weight.requires_grad and c.bias.requires_grad for c in convs]
    assert trained == [False] * frozen + [True] * (5 - frozen)
    heads = (net.fc6, net.fc7, net.scores, net.deltas)
    assert all(p.requires_grad for head in heads for p in head.parameters())


def test_a_layer_the_backbone_lacks_is_a_user_error():
    net = FastRcnn(build_backbone("tiny"), 2)
    for bad in ("conv3_1", "fc7", "pool1"):
        with pytest.raises(UserError, match=rf"--trainable-from {bad}: .*conv1, conv2, .* fc6"):
            net.freeze_early_layers(bad)
