"""SPP-net's network: the scale each window is pooled at, and the pyramid of every window equal to pooling
its projected cells by hand."""

import numpy as np
import torch

from stages.methods.spp.network import SppNet, pick_scales, scale_factors
from stages.methods.spp.options import PYRAMID
from stages.methods.spp.pooling import project_windows
from stages.networks.backbones import build_backbone
from tests.methods.spp.test_pooling import reference_spp


def test_each_window_is_pooled_at_the_scale_closest_to_the_input_size():
    factors = scale_factors(300, 400, (150, 300, 600))
    assert factors == [0.5, 1.0, 2.0]
    boxes = torch.tensor([[0.0, 0.0, 256.0, 256.0], [0.0, 0.0, 64.0, 64.0], [0.0, 0.0, 32.0, 32.0]])
    # sides at factors 0.5 / 1 / 2: 128 / 256 / 512, 32 / 64 / 128, 16 / 32 / 64 (closest on a log scale)
    assert pick_scales(boxes, factors, 64).tolist() == [0, 1, 2]
    assert pick_scales(boxes, factors, 224).tolist() == [1, 2, 2]


def test_sppnet_features_equal_pooling_each_scale_by_hand():
    torch.manual_seed(0)
    net = SppNet(build_backbone("tiny")).eval()
    image = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    boxes = torch.tensor([[10.0, 10.0, 60.0, 50.0], [0.0, 0.0, 160.0, 120.0], [100.0, 30.0, 118.0, 47.0]])
    factors = scale_factors(120, 160, (96, 240))
    maps = net.conv5(image, factors, torch.device("cpu"))
    assert [tuple(m.shape[1:]) for m in maps] == [(6, 8), (15, 20)]
    with torch.no_grad():
        pooled = net.pyramid(maps, boxes, factors, window_size=64)
        fc7 = net.head(pooled)
    assert pooled.shape == (3, 128 * 50) and fc7.shape == (3, 512)
    chosen = pick_scales(boxes, factors, 64)
    assert set(chosen.tolist()) == {0, 1}
    for k in range(3):
        conv5 = maps[chosen[k]]
        cells = project_windows(boxes[k : k + 1] * factors[chosen[k]], net.field, *conv5.shape[1:])
        expected = reference_spp(conv5.numpy(), cells[0].tolist(), PYRAMID)
        np.testing.assert_allclose(pooled[k].numpy(), expected, rtol=0, atol=0)
