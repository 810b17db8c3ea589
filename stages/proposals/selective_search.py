"""The selective-search worker: OpenCV only, so worker processes start fast (no torch import).

Returns OpenCV's raw rectangles; ``stages.proposals.propose`` converts them to toolkit boxes.

OpenCV ranks regions by hierarchy level times a random number (Uijlings et al. 2013, section 3.3),
drawn from the C library's ``rand()``. Seeding it from the image id before each search makes an image's
boxes and their order the same whatever process or order it runs in.
"""

from __future__ import annotations

import ctypes
import zlib
from pathlib import Path

import cv2
import numpy as np

from stages.core.errors import UserError
from stages.datasets.image_files import read_bgr

STRATEGIES = {
    "single": lambda search: search.switchToSingleStrategy(),
    "fast": lambda search: search.switchToSelectiveSearchFast(),
    "quality": lambda search: search.switchToSelectiveSearchQuality(),
}
"""How OpenCV is switched to each of ``stages.proposals.options.MODES``."""


def require_contrib() -> None:
    """UserError unless this OpenCV has its contrib modules (``cv2.ximgproc``), where selective search
    lives: ``opencv-python-headless`` alone lacks them (a GPU machine's stock image, say)."""
    if not hasattr(cv2, "ximgproc"):
        raise UserError(
            f"selective search needs OpenCV's contrib modules (cv2.ximgproc), which OpenCV {cv2.__version__} "
            "here lacks: install opencv-contrib-python-headless alone, or read proposals made elsewhere "
            "(`rcnn propose --import`, or a run folder's proposals/)"
        )


def seed_ranking(image_id: str, seed: int) -> bool:
    """Seed libc's rand() for one image; False where the C library cannot be reached (Windows)."""
    try:
        libc = ctypes.CDLL(None)
    except (OSError, TypeError):
        return False
    libc.srand(ctypes.c_uint((zlib.crc32(image_id.encode()) ^ seed) & 0xFFFFFFFF))
    return True


def search(path: Path, mode: str, max_side: int) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Selective search on one image: ((K, 4) int32 (x, y, w, h) ranked rectangles in the searched
    image, its scale relative to the original, the original (height, width)).

    Images whose longer side exceeds ``max_side`` are shrunk for the search.
    """
    image = read_bgr(path)
    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    segmentation = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    segmentation.setBaseImage(image)
    STRATEGIES[mode](segmentation)
    return np.asarray(segmentation.process()), scale, (height, width)


def worker(job: tuple[str, str, str, int, int]):
    """Pool entry point: (image_id, path, mode, max_side, seed) -> (image_id, search result or None,
    problem or None)."""
    image_id, path, mode, max_side, seed = job
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # one image a process: the pool is the parallelism
    try:
        seed_ranking(image_id, seed)
        return image_id, search(Path(path), mode, max_side), None
    except UserError as exc:
        return image_id, None, str(exc)
    finally:
        cv2.setNumThreads(threads)
