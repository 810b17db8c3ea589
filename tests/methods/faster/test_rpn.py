"""The region proposal network's pieces against slow, obvious references and torchvision: anchors, the order
of the network's outputs, anchor labels (section 3.1.2), the loss (equation 1, with gradcheck) and the
proposal layer (against torchvision's RPN post-processing on the same inputs)."""

import math

import numpy as np
import pytest
import torch

from stages.core.geometry import encode_boxes
from stages.methods.faster.options import RpnOptions
from stages.methods.faster.rpn import (
    RegionProposalNetwork,
    anchor_shapes,
    anchor_targets,
    grid_anchors,
    propose,
    rpn_loss,
)


def test_anchor_shapes_have_the_papers_areas_and_ratios():
    shapes = anchor_shapes((128, 256, 512), (0.5, 1.0, 2.0)).numpy()
    widths, heights = shapes[:, 2] - shapes[:, 0], shapes[:, 3] - shapes[:, 1]
    np.testing.assert_allclose(widths * heights, np.tile([128.0**2, 256.0**2, 512.0**2], 3), rtol=1e-5)
    np.testing.assert_allclose(heights / widths, np.repeat([0.5, 1.0, 2.0], 3), rtol=1e-5)
    np.testing.assert_allclose(shapes[:, :2], -shapes[:, 2:])  # centred on (0, 0)


def test_grid_anchors_match_a_loop_over_cells_and_torchvisions_generator():
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.image_list import ImageList

    sizes, ratios, stride, rows, columns = (32, 64), (0.5, 1.0, 2.0), 16, 3, 5
    shapes = anchor_shapes(sizes, ratios)
    found = grid_anchors(shapes, rows, columns, stride).numpy()
    expected = [
        [(x + 0.5) * stride + shape[0], (y + 0.5) * stride + shape[1], (x + 0.5) * stride + shape[2],
         (y + 0.5) * stride + shape[3]]
        for y in range(rows) for x in range(columns) for shape in shapes.tolist()
    ]  # fmt: skip
    np.testing.assert_allclose(found, expected, rtol=1e-6)
    # torchvision centres its anchors on the cells' corners (x stride) and rounds their shapes
    generator = AnchorGenerator((sizes,), (ratios,))
    images = ImageList(
        torch.zeros(1, 3, rows * stride, columns * stride), [(rows * stride, columns * stride)]
    )
    theirs = generator(images, [torch.zeros(1, 1, rows, columns)])[0].numpy()
    np.testing.assert_allclose(found - stride / 2, theirs, atol=0.5)


def test_a_larger_conv_init_scales_the_conv_alone():
    """``conv_init_std`` multiplies the 3 x 3 conv's draws; the other layers start where they would."""
    torch.manual_seed(0)
    paper = RegionProposalNetwork(8, 6)
    torch.manual_seed(0)
    larger = RegionProposalNetwork(8, 6, conv_std=0.3)
    assert torch.allclose(larger.conv.weight, 30 * paper.conv.weight)
    for name in ("objectness.weight", "deltas.weight", "conv.bias"):
        assert torch.equal(larger.state_dict()[name], paper.state_dict()[name]), name
    assert 0.25 < float(larger.conv.weight.detach().std()) < 0.35


def test_the_networks_outputs_follow_the_anchors_order():
    torch.manual_seed(0)
    network = RegionProposalNetwork(8, 6).eval()
    conv5 = torch.randn(1, 8, 3, 4)
    logits, deltas = network(conv5)
    hidden = torch.relu(network.conv(conv5))
    scores, boxes = network.objectness(hidden)[0], network.deltas(hidden)[0]
    for y in range(3):
        for x in range(4):
            for a in range(6):
                index = (y * 4 + x) * 6 + a
                assert torch.allclose(logits[0, index], scores[a, y, x])
                assert torch.allclose(deltas[0, index], boxes[4 * a : 4 * a + 4, y, x])


def _iou(a, b):
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _reference_labels(anchors, objects, height, width, positive_iou=0.7, negative_iou=0.3):
    """Section 3.1.2, one anchor and one object at a time."""
    labels = []
    inside = [a[0] >= 0 and a[1] >= 0 and a[2] <= width and a[3] <= height for a in anchors]
    best_of_object = [
        max([_iou(a, g) for a, keep in zip(anchors, inside, strict=True) if keep], default=0.0)
        for g in objects
    ]
    for anchor, keep in zip(anchors, inside, strict=True):
        if not keep:
            labels.append(-1)
            continue
        overlaps = [_iou(anchor, g) for g in objects]
        best = max(overlaps, default=0.0)
        is_best = any(o == b and b > 0 for o, b in zip(overlaps, best_of_object, strict=True))
        labels.append(1 if best > positive_iou or is_best else 0 if best < negative_iou else -1)
    return np.array(labels)


@pytest.mark.parametrize("objects", [
    [[10, 12, 60, 50], [70, 20, 90, 95], [5, 60, 40, 90]],
    [[0, 0, 3, 3]],  # smaller than every anchor: its best anchors still become positive
    [],  # no objects: every anchor inside the image negative
])  # fmt: skip
def test_anchor_labels_match_the_papers_rules(objects):
    anchors = grid_anchors(anchor_shapes((16, 32), (0.5, 1.0, 2.0)), 6, 7, 16).numpy()
    objects = np.array(objects, dtype=np.float32).reshape(-1, 4)
    options = RpnOptions(anchors_per_image=10_000)  # every labelled anchor drawn: the labels themselves
    labels, targets = anchor_targets(anchors, objects, (100, 110), options, np.random.default_rng(0))
    np.testing.assert_array_equal(labels, _reference_labels(anchors, objects, 100, 110))
    positive = labels == 1
    if len(objects):
        assert positive.any()
        best = objects[[np.argmax([_iou(a, g) for g in objects]) for a in anchors[positive]]]
        expected = encode_boxes(torch.as_tensor(anchors[positive]), torch.as_tensor(best)).numpy()
        np.testing.assert_allclose(targets[positive], expected, rtol=1e-5, atol=1e-6)
    assert not targets[~positive].any()


def test_anchor_sampling_draws_256_at_most_half_positive():
    anchors = grid_anchors(anchor_shapes((16, 32, 64), (0.5, 1.0, 2.0)), 20, 20, 16).numpy()
    rng = np.random.default_rng(0)
    grid = range(0, 288, 20)
    objects = np.array([[x, y, x + 32, y + 32] for x in grid for y in grid], np.float32)
    labels, _ = anchor_targets(anchors, objects, (320, 320), RpnOptions(), rng)
    assert (labels >= 0).sum() == 256 and (labels == 1).sum() == 128
    few = objects[:1]
    labels, _ = anchor_targets(anchors, few, (320, 320), RpnOptions(), rng)
    assert (labels >= 0).sum() == 256 and 0 < (labels == 1).sum() < 128  # padded with negatives


@pytest.mark.parametrize("beta", [1.0, 1 / 9])  # Fast R-CNN's smooth L1; py-faster-rcnn's sigma = 3
def test_the_loss_is_equation_one_and_differentiable(beta):
    rng = np.random.default_rng(0)
    count, positions = 40, 12
    logits = torch.tensor(rng.normal(size=count), dtype=torch.float64, requires_grad=True)
    deltas = torch.tensor(rng.normal(size=(count, 4)), dtype=torch.float64, requires_grad=True)
    labels = torch.as_tensor(rng.choice([-1, 0, 1], count))
    targets = torch.as_tensor(rng.normal(size=(count, 4)), dtype=torch.float64) * (labels == 1)[:, None]
    loss, parts = rpn_loss(logits, deltas, labels, targets, positions, box_weight=10.0, beta=beta)
    sampled = [i for i in range(count) if labels[i] >= 0]
    classification = 0.0
    for i in sampled:
        p = 1 / (1 + math.exp(-logits[i].item()))
        classification -= math.log(p) if labels[i] == 1 else math.log(1 - p)
    regression = 0.0
    for i in range(count):
        if labels[i] == 1:
            for d in (deltas[i] - targets[i]).tolist():
                regression += 0.5 * d * d / beta if abs(d) < beta else abs(d) - 0.5 * beta
    expected = classification / len(sampled) + 10.0 * regression / positions
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    assert parts["rpn_cls_loss"] == pytest.approx(classification / len(sampled), rel=1e-9)
    assert torch.autograd.gradcheck(
        lambda lo, de: rpn_loss(lo, de, labels, targets, positions, beta=beta)[0], (logits, deltas)
    )


def _random_outputs(count, seed=0):
    rng = np.random.default_rng(seed)
    anchors = grid_anchors(anchor_shapes((16, 32, 64), (0.5, 1.0, 2.0)), 8, 10, 16)[:count]
    logits = torch.as_tensor(rng.normal(size=len(anchors)), dtype=torch.float32)
    deltas = torch.as_tensor(rng.normal(scale=0.3, size=(len(anchors), 4)), dtype=torch.float32)
    return anchors, logits, deltas


def test_the_proposal_layer_matches_torchvisions_rpn_post_processing():
    from torchvision.models.detection.rpn import RegionProposalNetwork as TorchvisionRpn
    from torchvision.models.detection.rpn import RPNHead

    anchors, logits, deltas = _random_outputs(720)
    size = (128, 160)
    boxes, scores = propose(
        anchors, logits, deltas, size, pre_nms=400, post_nms=100, nms_iou=0.7, min_size=1e-3
    )
    theirs = TorchvisionRpn(None, RPNHead(1, 1), 0.7, 0.3, 256, 0.5, {"testing": 400}, {"testing": 100}, 0.7)
    theirs.box_coder.weights = (1.0, 1.0, 1.0, 1.0)  # ours: R-CNN's unweighted box parameters
    theirs.eval()
    decoded = theirs.box_coder.decode_single(deltas, anchors)
    their_boxes, their_scores = theirs.filter_proposals(
        decoded[None], logits[:, None], [size], [len(anchors)]
    )
    np.testing.assert_allclose(boxes.numpy(), their_boxes[0].numpy(), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(scores.numpy(), their_scores[0].numpy(), rtol=1e-5)


def test_the_proposal_layer_drops_small_boxes_before_ranking():
    anchors, logits, deltas = _random_outputs(480, seed=1)
    size = (100, 120)
    boxes, scores = propose(anchors, logits, deltas, size, pre_nms=50, post_nms=20, nms_iou=0.7, min_size=24)
    # the reference: decode, clip, drop small, rank, greedy NMS, one box at a time
    candidates = []
    for anchor, logit, delta in zip(anchors.tolist(), logits.tolist(), deltas.tolist(), strict=True):
        w, h = anchor[2] - anchor[0], anchor[3] - anchor[1]
        cx, cy = anchor[0] + w / 2 + delta[0] * w, anchor[1] + h / 2 + delta[1] * h
        w, h = w * math.exp(delta[2]), h * math.exp(delta[3])
        box = [min(max(cx - w / 2, 0), 120), min(max(cy - h / 2, 0), 100), min(max(cx + w / 2, 0), 120),
               min(max(cy + h / 2, 0), 100)]  # fmt: skip
        if box[2] - box[0] >= 24 and box[3] - box[1] >= 24:
            candidates.append((logit, box))
    candidates = sorted(candidates, key=lambda c: -c[0])[:50]
    kept = []
    for logit, box in candidates:
        if all(_iou(box, other) <= 0.7 for _, other in kept):
            kept.append((logit, box))
    kept = kept[:20]
    np.testing.assert_allclose(boxes.numpy(), [box for _, box in kept], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(scores.numpy(), [1 / (1 + math.exp(-logit)) for logit, _ in kept], rtol=1e-5)
