"""Reading any image a user has as RGB uint8."""

import cv2
import numpy as np
import pytest

from stages.core.errors import UserError
from stages.networks.inputs import IMAGENET_MEAN, read_image, to_network_input


@pytest.mark.parametrize(
    "name,pixels",
    [
        ("gray.png", np.full((20, 30), 128, np.uint8)),
        (
            "rgba.png",
            np.dstack([np.full((20, 30, 3), (10, 20, 30), np.uint8), np.full((20, 30), 7, np.uint8)]),
        ),
        ("deep.png", np.full((20, 30, 3), 65535, np.uint16)),
        ("photo.jpg", np.full((20, 30, 3), (200, 100, 50), np.uint8)),
    ],
)
def test_any_image_reads_as_rgb_uint8(tmp_path, name, pixels):
    cv2.imwrite(str(tmp_path / name), pixels)
    image = read_image(tmp_path / name)
    assert image.shape == (20, 30, 3) and image.dtype == np.uint8
    if name == "rgba.png":
        assert image[0, 0].tolist() == [30, 20, 10]  # BGR written, RGB read, alpha dropped
    if name == "deep.png":
        assert image.max() == 255


def test_unreadable_images_name_the_file(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(UserError, match=r"broken\.jpg: not an image"):
        read_image(tmp_path / "broken.jpg")
    with pytest.raises(UserError, match=r"missing\.jpg: file not found"):
        read_image(tmp_path / "missing.jpg")


def test_the_mean_colour_normalises_to_zero():
    mean = np.round(np.array(IMAGENET_MEAN) * 255).astype(np.uint8)
    tensor = to_network_input(np.tile(mean, (2, 2, 1)))
    assert tensor.shape == (3, 2, 2) and tensor.abs().max() < 0.01
