"""SPP-net geometry and spatial pyramid pooling against hand computations, the paper's formulas, a slow
reference implementation and torchvision's roi_pool."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from stages.methods.spp.options import PYRAMID
from stages.methods.spp.pooling import (
    ReceptiveField,
    bin_edges,
    project_windows,
    pyramid_bins,
    receptive_field,
    spatial_pyramid_pool,
)
from stages.networks.backbones import BACKBONES


def test_zf5_stride_and_receptive_field_are_the_papers():
    field = receptive_field(BACKBONES["zf5"].layers)
    assert (field.stride, field.size) == (16, 139)
    # every layer pads floor(k / 2): cell 1 is centred on pixel 1 and the simple rule needs no offset
    assert field.beta == 1.0 and field.first_extent == (-68.0, 70.0)


def test_the_papers_zf5_offsets_place_the_first_cell():
    """The paper's ZF-5 offsets: the first conv5 cell sees pixels -63 .. 75 (139 = 63 + 75 + 1), so its
    centre is pixel 6 and windows are measured from there."""
    field = ReceptiveField(stride=16, size=139, beta=6.0)
    assert field.first_extent == (-63.0, 75.0)
    boxes = torch.tensor([[100.0, 100.0, 300.0, 300.0]])
    # left: floor((x - shift) / 16) + 1 with x = 101 (1-based first pixel), shift 5 -> 7; 0-based 6
    # right: ceil((300 - 5) / 16) - 1 = 18; 0-based 17
    assert project_windows(boxes, field, 100, 100).tolist() == [[6, 6, 17, 17]]


def test_receptive_fields_computed_by_hand():
    # alexnet: conv1 11/4, pool 3/2, conv2 5, pool 3/2, conv3-5 3 -> 3, 5, 7, 15, 19, 39, 163
    alexnet = receptive_field(BACKBONES["alexnet"].layers)
    assert (alexnet.stride, alexnet.size) == (16, 163)
    # centre: 1 + (11-1)/2-2 + 4 (1-0) + 8 (2-2) + 8 (1-0) + 16 (0 + 0 + 0) = 1 + 3 + 4 + 8 = 16
    assert alexnet.beta == 16.0
    # vgg16 conv5_3: 13 3x3 convs and four 2x2 pools: 1 + 2 (2 convs) ... = 196
    vgg = receptive_field(BACKBONES["vgg16"].layers)
    assert (vgg.stride, vgg.size) == (16, 196)
    assert vgg.beta == 1 + 0.5 * (1 + 2 + 4 + 8)  # the unpadded 2x2 pools shift the centre half a step
    tiny = receptive_field(BACKBONES["tiny"].layers)
    assert (tiny.stride, tiny.size) == (16, 1 + 4 + 1 * 2 + 4 * 4 + 1 * 8 + 2 * 16 * 3)


def test_simple_rule_when_padding_is_floor_k_over_2():
    field = ReceptiveField(16, 139, 1.0)
    x1, x2 = 40.0, 200.0  # 1-based first pixel 41, last pixel 200
    cells = project_windows(torch.tensor([[x1, 10.0, x2, 30.0]]), field, 50, 50)[0].tolist()
    assert cells[0] == math.floor(41 / 16) + 1 - 1 and cells[2] == math.ceil(200 / 16) - 1 - 1


@given(
    st.floats(-50, 900), st.floats(-50, 900), st.floats(0, 900), st.floats(0, 900),
    st.sampled_from(sorted(BACKBONES)), st.integers(1, 60), st.integers(1, 60),
)  # fmt: skip
def test_projection_is_nonempty_inside_and_monotone(x, y, w, h, name, height, width):
    field = receptive_field(BACKBONES[name].layers)
    box = torch.tensor([[x, y, x + w, y + h]], dtype=torch.float64)
    cells = project_windows(box, field, height, width)[0]
    assert 0 <= cells[0] <= cells[2] < width and 0 <= cells[1] <= cells[3] < height
    bigger = project_windows(box + torch.tensor([[-20.0, -20.0, 20.0, 20.0]], dtype=torch.float64),
                             field, height, width)[0]  # fmt: skip
    assert bigger[0] <= cells[0] and bigger[1] <= cells[1] and bigger[2] >= cells[2] and bigger[3] >= cells[3]


def reference_spp(features: np.ndarray, window, levels) -> np.ndarray:
    """Paper bins, with loops: level n, bin (i, j) covers rows floor(i h / n) .. ceil((i+1) h / n) - 1
    and the same for columns, of the window's cells; max in each; channel-major per level."""
    x1, y1, x2, y2 = window
    region = features[:, y1 : y2 + 1, x1 : x2 + 1]
    height, width = region.shape[1:]
    out = []
    for n in levels:
        level = np.zeros((features.shape[0], n, n))
        for i in range(n):
            r0, r1 = math.floor(i * height / n), math.ceil((i + 1) * height / n)
            for j in range(n):
                c0, c1 = math.floor(j * width / n), math.ceil((j + 1) * width / n)
                level[:, i, j] = region[:, r0:r1, c0:c1].max(axis=(1, 2))
        out.append(level.reshape(-1))
    return np.concatenate(out)


WINDOWS = [[0, 0, 12, 9], [3, 2, 3, 2], [5, 1, 7, 8], [10, 0, 12, 2], [1, 4, 11, 5]]


def test_pyramid_pooling_matches_the_reference():
    features = torch.randn(2, 4, 10, 13, generator=torch.Generator().manual_seed(0))
    cells = torch.tensor(WINDOWS)
    image_index = torch.tensor([0, 1, 0, 1, 0])
    pooled = spatial_pyramid_pool(features, cells, image_index)
    assert pooled.shape == (5, 4 * pyramid_bins()) and pyramid_bins() == 50
    for k, window in enumerate(WINDOWS):
        expected = reference_spp(features[image_index[k]].numpy(), window, PYRAMID)
        np.testing.assert_allclose(pooled[k].numpy(), expected, rtol=0, atol=0)


def test_bins_overlap_when_the_window_is_smaller_than_the_level():
    assert bin_edges(4, 6) == [(0, 1), (0, 2), (1, 2), (2, 3), (2, 4), (3, 4)]
    assert bin_edges(13, 3) == [(0, 5), (4, 9), (8, 13)]


def test_roi_pool_agrees_on_cell_windows_and_differs_on_image_boxes():
    """Given integer cell windows, roi_pool's bins are the paper's. Given image boxes and a 1/16 scale it
    rounds both corners to the nearest cell, where the paper takes the cell at or inside each corner
    (floor + 1, ceil - 1), so windows and bins come out differently."""
    from torchvision.ops import roi_pool

    features = torch.randn(1, 3, 20, 20, generator=torch.Generator().manual_seed(1))
    cells = torch.tensor([[2, 3, 9, 7]])
    ours = spatial_pyramid_pool(features, cells, torch.zeros(1, dtype=torch.long), levels=(3,))
    theirs = roi_pool(features, torch.tensor([[0.0, 2, 3, 9, 7]]), (3, 3), 1.0).flatten(1)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    field = ReceptiveField(16, 139, 1.0)
    box = torch.tensor([[40.0, 40.0, 140.0, 140.0]])  # 1-based pixels 41 .. 140
    paper = project_windows(box, field, 20, 20)
    assert paper.tolist() == [[2, 2, 7, 7]]  # floor(41 / 16) + 1 - 1, ceil(140 / 16) - 1 - 1
    on_image_box = roi_pool(features, torch.tensor([[0.0, 40, 40, 140, 140]]), (3, 3), 1 / 16).flatten(1)
    zero = torch.zeros(1, dtype=torch.long)
    # roi_pool rounds each corner to the nearest cell, half away from zero: 2.5 -> 3, 8.75 -> 9
    rounded = spatial_pyramid_pool(features, torch.tensor([[3, 3, 9, 9]]), zero, levels=(3,))
    torch.testing.assert_close(on_image_box, rounded, rtol=0, atol=0)
    assert not torch.equal(on_image_box, spatial_pyramid_pool(features, paper, zero, levels=(3,)))


@pytest.mark.parametrize("levels", [PYRAMID, (1, 2, 4)])
def test_coarse_levels_from_the_finest_equal_roi_pool_at_every_window_size(levels):
    """The levels taken from the finest one's bins equal roi_pool run at each level, for windows of every
    width and height from 1 to 150 cells."""
    from torchvision.ops import roi_pool

    generator = torch.Generator().manual_seed(4)
    features = torch.randn(1, 2, 160, 160, generator=generator)
    sizes = torch.arange(1, 151)
    starts = torch.randint(0, 10, (2, len(sizes)), generator=generator)
    for heights in (sizes, sizes.flip(0)):
        cells = torch.stack([starts[0], starts[1], starts[0] + sizes - 1, starts[1] + heights - 1], dim=1)
        rois = torch.cat([torch.zeros(len(cells), 1), cells.float()], dim=1)
        expected = torch.cat([roi_pool(features, rois, (n, n), 1.0).flatten(1) for n in levels], dim=1)
        pooled = spatial_pyramid_pool(features, cells, torch.zeros(len(cells), dtype=torch.long), levels)
        torch.testing.assert_close(pooled, expected, rtol=0, atol=0)


def test_pooling_backward_routes_each_bin_to_its_maximum():
    """dL/dx_i = sum over windows r and bins j of [i = argmax(r, j)] dL/dy_rj (SPP-net, Fast R-CNN 2.1)."""
    features = torch.randn(1, 2, 6, 7, generator=torch.Generator().manual_seed(2), requires_grad=True)
    cells = torch.tensor([[0, 0, 6, 5], [2, 1, 4, 3]])
    pooled = spatial_pyramid_pool(features, cells, torch.zeros(2, dtype=torch.long), levels=(1, 2))
    upstream = torch.randn(pooled.shape, generator=torch.Generator().manual_seed(3))
    pooled.backward(upstream)
    expected = torch.zeros_like(features)
    flat = features.detach()[0]
    for r, (x1, y1, x2, y2) in enumerate(cells.tolist()):
        offset = 0
        for n in (1, 2):
            rows, cols = bin_edges(y2 - y1 + 1, n), bin_edges(x2 - x1 + 1, n)
            for c in range(2):
                for i, (r0, r1) in enumerate(rows):
                    for j, (c0, c1) in enumerate(cols):
                        block = flat[c, y1 + r0 : y1 + r1, x1 + c0 : x1 + c1]
                        k = int(block.argmax())
                        yy, xx = divmod(k, block.shape[1])
                        expected[0, c, y1 + r0 + yy, x1 + c0 + xx] += upstream[
                            r, offset + (c * n + i) * n + j
                        ]
            offset += 2 * n * n
    torch.testing.assert_close(features.grad, expected)


def test_pooling_gradcheck():
    features = torch.randn(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    cells = torch.tensor([[0, 0, 5, 4], [1, 1, 3, 3]])
    image_index = torch.zeros(2, dtype=torch.long)
    assert torch.autograd.gradcheck(
        lambda f: spatial_pyramid_pool(f, cells, image_index, (1, 2, 3)), (features,)
    )


@pytest.mark.parametrize("levels", [(1,), (1, 2, 3, 6), (4,)])
def test_output_width(levels):
    pooled = spatial_pyramid_pool(
        torch.zeros(1, 8, 9, 9), torch.tensor([[0, 0, 8, 8]]), torch.zeros(1).long(), levels
    )
    assert pooled.shape == (1, 8 * sum(n * n for n in levels))
