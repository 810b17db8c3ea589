import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from stages.core.geometry import (
    box_iou,
    boxes_to_voc,
    clip_boxes,
    decode_boxes,
    encode_boxes,
    first_unique,
    nonempty,
    voc_to_boxes,
    xywh_to_boxes,
)

coordinate = st.integers(1, 500)


@st.composite
def voc_box(draw):
    x1, x2 = sorted((draw(coordinate), draw(coordinate)))
    y1, y2 = sorted((draw(coordinate), draw(coordinate)))
    return (x1, y1, x2, y2)


def devkit_iou(a, b) -> float:
    """The VOC devkit's overlap of two 1-based inclusive boxes (VOCevaldet.m), written out."""
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if iw <= 0 or ih <= 0:
        return 0.0
    union = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - iw * ih
    return iw * ih / union


@given(voc_box(), voc_box())
def test_iou_in_toolkit_convention_is_the_devkits_overlap(a, b):
    ours = box_iou(voc_to_boxes(np.array([a])), voc_to_boxes(np.array([b])))[0, 0]
    assert np.isclose(ours, devkit_iou(a, b), atol=1e-6)


@given(st.lists(voc_box(), min_size=1, max_size=20))
def test_voc_conversion_round_trips_and_keeps_the_devkit_width(boxes):
    voc = np.array(boxes, dtype=np.float32)
    ours = voc_to_boxes(voc)
    assert np.array_equal(boxes_to_voc(ours), voc)
    assert np.array_equal(ours[:, 2] - ours[:, 0], voc[:, 2] - voc[:, 0] + 1)


def test_iou_by_hand():
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]], np.float32)
    assert np.allclose(box_iou(a, b), [[50 / 150, 0.0, 1.0]])
    assert box_iou(a, np.zeros((0, 4))).shape == (1, 0)


@given(
    arrays(np.float32, (12, 4), elements=st.floats(-100, 400, width=32)),
    st.integers(1, 300),
    st.integers(1, 300),
)
def test_clipped_boxes_lie_inside_the_image(boxes, height, width):
    clipped = clip_boxes(boxes, height, width)
    assert (clipped[:, 0::2] >= 0).all() and (clipped[:, 0::2] <= width).all()
    assert (clipped[:, 1::2] >= 0).all() and (clipped[:, 1::2] <= height).all()
    inside = (boxes[:, 0::2] >= 0).all(1) & (boxes[:, 0::2] <= width).all(1)
    inside &= (boxes[:, 1::2] >= 0).all(1) & (boxes[:, 1::2] <= height).all(1)
    assert np.array_equal(clipped[inside], boxes[inside])


def test_nonempty_and_xywh():
    boxes = xywh_to_boxes(np.array([[1, 2, 3, 4], [5, 5, 0, 2]]))
    assert np.array_equal(boxes, [[1, 2, 4, 6], [5, 5, 5, 7]])
    assert nonempty(boxes).tolist() == [True, False]


@given(st.lists(st.tuples(*[st.integers(0, 3)] * 4), min_size=1, max_size=30))
def test_first_unique_keeps_first_occurrences_in_order(rows):
    keep = first_unique(np.array(rows))
    expected, seen = [], set()
    for i, row in enumerate(rows):
        if row not in seen:
            seen.add(row)
            expected.append(i)
    assert keep.tolist() == expected


@st.composite
def positive_boxes(draw, n: int = 8):
    xy = draw(arrays(np.float64, (n, 2), elements=st.floats(-50, 500)))
    wh = draw(arrays(np.float64, (n, 2), elements=st.floats(1, 400)))
    return np.concatenate([xy, xy + wh], axis=1)


@given(positive_boxes(), positive_boxes())
def test_box_coding_round_trips(proposals, targets):
    proposals_t, targets_t = torch.from_numpy(proposals), torch.from_numpy(targets)
    deltas = encode_boxes(proposals_t, targets_t)
    assert torch.allclose(decode_boxes(proposals_t, deltas, max_log_scale=100), targets_t, atol=1e-6)


def test_box_coding_by_hand():
    proposal = torch.tensor([[0.0, 0.0, 10.0, 20.0]])  # centre (5, 10), size 10 x 20
    target = torch.tensor([[2.0, 4.0, 22.0, 24.0]])  # centre (12, 14), size 20 x 20
    expected = torch.tensor([[0.7, 0.2, float(np.log(2.0)), 0.0]])
    assert torch.allclose(encode_boxes(proposal, target), expected)
    huge = decode_boxes(proposal, torch.tensor([[0.0, 0.0, 50.0, 50.0]]))
    assert torch.isfinite(huge).all() and (huge[:, 2] - huge[:, 0]).item() == pytest.approx(
        10 * np.exp(4.135)
    )
