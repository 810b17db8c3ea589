"""Images for the networks: any JPEG or PNG a user has (grayscale, RGBA, CMYK, 16-bit, large) read as RGB
through ``stages.datasets.image_files``, then normalised and resized.

Networks see images normalised with torchvision's ImageNet mean and std, so the mean pixel is 0 after
normalisation: zero padding is R-CNN's "mean fill" (R-CNN appendix A).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from stages.datasets.image_files import read_bgr

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB: grayscale replicated, alpha dropped, 16 bits scaled; UserError naming the
    file if it is missing, truncated or not an image."""
    image = read_bgr(path)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB, dst=image)  # in place: large images are not copied


def to_network_input(image: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 on ``device``, ImageNet-normalised."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1).float().div_(255)
    mean = torch.tensor(IMAGENET_MEAN, device=tensor.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=tensor.device).view(3, 1, 1)
    return tensor.sub_(mean).div_(std)


def resized_input(image: np.ndarray, factor: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, round(H factor), round(W factor)) network input.

    Enlarging is bilinear on the normalised floats. Shrinking averages the 8-bit pixels each output pixel
    covers (OpenCV's area interpolation) before normalising, so a large photo never exists as floats
    (12 bytes a pixel against 3).
    """
    if factor == 1:
        return to_network_input(image, device)
    size = (max(1, round(image.shape[0] * factor)), max(1, round(image.shape[1] * factor)))
    if factor < 1:
        return to_network_input(cv2.resize(image, size[::-1], interpolation=cv2.INTER_AREA), device)
    tensor = to_network_input(image, device)
    return F.interpolate(tensor[None], size=size, mode="bilinear", align_corners=False)[0]


class ImageCache:
    """Decoded images by path, least recently used dropped beyond ``max_bytes`` (one per process)."""

    def __init__(self, max_bytes: int = 1 << 30):
        self.max_bytes = max_bytes
        self._images: dict[Path, np.ndarray] = {}
        self._bytes = 0

    def __call__(self, path: Path) -> np.ndarray:
        image = self._images.pop(path, None)
        if image is None:
            image = read_image(path)
            self._bytes += image.nbytes
        self._images[path] = image  # most recently used last
        while self._bytes > self.max_bytes and len(self._images) > 1:
            oldest = next(iter(self._images))
            self._bytes -= self._images.pop(oldest).nbytes
        return image


def scale_factor(height: int, width: int, scale: int, max_size: int) -> float:
    """The factor that brings the shorter side to ``scale`` unless the longer one would pass ``max_size``."""
    factor = scale / min(height, width)
    if round(max(height, width) * factor) > max_size:
        factor = max_size / max(height, width)
    return factor


def pad_images(images: Sequence[torch.Tensor]) -> torch.Tensor:
    """(3, H_i, W_i) inputs -> (N, 3, max H, max W), zero-padded right and bottom (zero is the mean pixel
    after normalisation)."""
    height = max(t.shape[1] for t in images)
    width = max(t.shape[2] for t in images)
    batch = images[0].new_zeros(len(images), 3, height, width)
    for slot, tensor in enumerate(images):
        batch[slot, :, : tensor.shape[1], : tensor.shape[2]] = tensor
    return batch
