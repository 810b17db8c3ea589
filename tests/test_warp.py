"""R-CNN region warping against a slow per-pixel reference, torchvision's roi_align and the paper's rule."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from stages.networks.inputs import to_network_input
from stages.networks.warp import context_windows, warp_batch, warp_regions


def reference_warp(image: np.ndarray, box, size: int, padding: int) -> np.ndarray:
    """Per output pixel: the dilated window's point at ((j + 1/2) / size, (i + 1/2) / size), read by
    bilinear interpolation between pixel centres, with 0 (the mean) for pixels outside the image."""
    channels, height, width = image.shape
    x1, y1, x2, y2 = box
    scale = size / (size - 2 * padding)
    cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * scale / 2, (y2 - y1) * scale / 2
    out = np.zeros((channels, size, size))

    def pixel(r: int, c: int) -> np.ndarray:
        inside = 0 <= r < height and 0 <= c < width
        return image[:, r, c] if inside else np.zeros(channels)

    for i in range(size):
        for j in range(size):
            x = cx - hw + (j + 0.5) / size * 2 * hw - 0.5  # continuous -> pixel-centre coordinates
            y = cy - hh + (i + 0.5) / size * 2 * hh - 0.5
            c0, r0 = int(np.floor(x)), int(np.floor(y))
            fx, fy = x - c0, y - r0
            out[:, i, j] = (1 - fy) * ((1 - fx) * pixel(r0, c0) + fx * pixel(r0, c0 + 1)) + fy * (
                (1 - fx) * pixel(r0 + 1, c0) + fx * pixel(r0 + 1, c0 + 1)
            )
    return out


BOXES = [
    (10.0, 5.0, 30.0, 40.0),  # inside
    (0.0, 0.0, 70.0, 50.0),  # the whole image: context reaches outside
    (-5.0, -8.0, 20.0, 20.0),  # cut by the top-left corner
    (60.0, 40.0, 95.0, 75.0),  # mostly outside
    (33.3, 12.7, 34.1, 47.9),  # thin
]


@pytest.mark.parametrize("padding", [0, 3])
def test_warp_matches_the_slow_reference(padding):
    image = torch.randn(3, 50, 70, generator=torch.Generator().manual_seed(0))
    warped = warp_regions(image, torch.tensor(BOXES), 12, padding)
    for k, box in enumerate(BOXES):
        np.testing.assert_allclose(
            warped[k].numpy(), reference_warp(image.numpy(), box, 12, padding), atol=1e-4
        )


def test_warp_equals_roi_align_on_a_mean_padded_image():
    from torchvision.ops import roi_align

    image = torch.randn(3, 50, 70, generator=torch.Generator().manual_seed(1))
    boxes = torch.tensor(BOXES)
    margin = 40
    padded = torch.nn.functional.pad(image, (margin,) * 4)  # zeros: the mean of normalised input
    expected = roi_align(padded[None], [context_windows(boxes, 16, 2) + margin], 16, 1.0, 1, aligned=True)
    torch.testing.assert_close(warp_regions(image, boxes, 16, 2), expected, atol=1e-4, rtol=0)


def test_context_padding_puts_the_box_in_the_centre():
    """With padding p, the box fills output pixels p .. size - p - 1 (R-CNN appendix A)."""
    image = torch.zeros(1, 100, 100)
    image[:, 40:60, 30:70] = 1.0  # the box (30, 40, 70, 60), exactly
    warped = warp_regions(image, torch.tensor([[30.0, 40.0, 70.0, 60.0]]), 20, 4)[0, 0]
    inner = warped[5:15, 5:15]  # away from the bilinear seam
    assert torch.all(inner == 1.0)
    assert torch.all(warped[:3] == 0) and torch.all(warped[-3:] == 0)
    assert torch.all(warped[:, :3] == 0) and torch.all(warped[:, -3:] == 0)
    dilated = torch.tensor([[30 - 40 / 3, 40 - 20 / 3, 70 + 40 / 3, 60 + 20 / 3]])
    torch.testing.assert_close(context_windows(torch.tensor([[30.0, 40.0, 70.0, 60.0]]), 20, 4), dilated)


def test_outside_the_image_is_the_mean_pixel():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    crops = warp_batch({0: image}, np.zeros(1, int), np.array([[100.0, 100.0, 140.0, 130.0]]), 8, 2)
    assert torch.all(crops == 0)  # zero after normalisation is the ImageNet mean colour


@given(st.lists(st.tuples(st.floats(-30, 90), st.floats(-30, 70), st.floats(1, 60), st.floats(1, 60)),
                min_size=1, max_size=6), st.booleans())  # fmt: skip
def test_batch_warp_from_a_cropped_image_equals_warping_the_whole_image(rects, flip):
    image = np.random.default_rng(3).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    boxes = np.array([(x, y, x + w, y + h) for x, y, w, h in rects], dtype=np.float32)
    flips = np.array([flip] * len(boxes))
    crops = warp_batch({0: image}, np.zeros(len(boxes), int), boxes, 10, 2, flips)
    expected = warp_regions(to_network_input(image), torch.as_tensor(boxes), 10, 2)
    torch.testing.assert_close(crops, expected.flip(-1) if flip else expected, atol=1e-4, rtol=0)


def test_warp_is_differentiable_in_the_image():
    image = torch.randn(2, 9, 11, dtype=torch.float64, requires_grad=True)
    boxes = torch.tensor([[1.0, 2.0, 7.5, 8.0], [-2.0, 0.0, 5.0, 12.0]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda im: warp_regions(im, boxes, 5, 1), (image,))


def test_windows_spanning_a_large_image_are_warped_one_by_one_to_the_same_crops(monkeypatch):
    image = np.random.default_rng(1).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    boxes = np.array([[2, 3, 30, 40], [40, 10, 78, 58], [-10, -5, 20, 20]], np.float32)
    together = warp_batch({0: image}, np.zeros(3, int), boxes, 16, 2)
    monkeypatch.setattr("stages.networks.warp.REGION_PIXELS", 100)  # every batch now spans "too many" pixels
    one_by_one = warp_batch({0: image}, np.zeros(3, int), boxes, 16, 2)
    torch.testing.assert_close(one_by_one, together, atol=1e-4, rtol=0)


def test_a_window_far_larger_than_the_crop_is_shrunk_in_8_bits_first(monkeypatch):
    """A 400-pixel window warped to 16 x 16 reads a 64-pixel (4 x 16) area-shrunk copy; on a smooth image
    that is what bilinear sampling of the whole image gives, up to a rounding to 8 bits."""
    ramp = np.linspace(0, 255, 400)
    image = np.stack([np.add.outer(ramp, ramp) / 2] * 3, axis=-1).round().astype(np.uint8)
    box = np.array([[0, 0, 400, 400]], np.float32)
    direct = warp_regions(to_network_input(image), torch.as_tensor(box), 16, 0)
    monkeypatch.setattr("stages.networks.warp.REGION_PIXELS", 100)
    shrunk = warp_batch({0: image}, np.zeros(1, int), box, 16, 0)
    torch.testing.assert_close(shrunk, direct, atol=2 / 255 / 0.224, rtol=0)  # 2 levels of 255, normalised
