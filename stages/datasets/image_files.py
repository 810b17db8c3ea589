"""Image files to pixels: every stage decodes through here, so a broken file is the same one-line error
everywhere. Imports no torch: selective-search worker processes use it.

OpenCV decodes (grayscale, RGBA, CMYK and 16-bit files all come out as 8-bit BGR), but on a truncated
JPEG it only prints libjpeg's "Premature end of JPEG file", without the file's name, and returns a half-grey
picture. So Pillow first reads each file's compressed data to the end, a JPEG at an eighth of its size
(libjpeg then skips most of the work), and a file that ends early or does not decode is refused.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from stages.core.errors import UserError, first_line

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
"""File name endings (lower-cased) that name an image when a folder is listed."""


def is_image_name(path: Path) -> bool:
    """Whether ``path``'s name ends as an image file's does (any case)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def stored_size(path: Path) -> tuple[int, int]:
    """(height, width) of the image file at ``path`` as stored, from its header alone."""
    return _read(path, decode=False)


def check_image_file(path: Path) -> tuple[int, int]:
    """(height, width) of the image file at ``path`` as stored, once its data has been read through;
    UserError naming the file if it is missing, not an image, truncated or corrupt.

    Images up to Pillow's decompression-bomb limit (about 179 million pixels) are read; larger ones are
    refused.
    """
    return _read(path, decode=True)


def _read(path: Path, decode: bool) -> tuple[int, int]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # large photos are welcome
            with Image.open(path) as image:
                width, height = image.size
                if decode:
                    if image.format == "JPEG":
                        image.draft(image.mode, (max(1, width // 8), max(1, height // 8)))
                    image.load()
    except UnidentifiedImageError:
        raise UserError(f"{path}: not an image (no decoder recognises its content)") from None
    except Image.DecompressionBombError as exc:
        raise UserError(f"{path}: too large to decode ({first_line(exc)})") from None
    except (OSError, SyntaxError, ValueError) as exc:  # what Pillow's decoders raise on damaged data
        raise UserError(f"{path}: truncated or corrupt image ({first_line(exc)})") from None
    return height, width


def read_bgr(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 BGR pixels of the image file at ``path``, as OpenCV decodes them (EXIF orientation
    applied); UserError naming the file if it is missing, not an image, truncated or corrupt."""
    check_image_file(path)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise UserError(f"{path}: an image format OpenCV cannot decode")
    return image
