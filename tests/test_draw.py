"""Pictures of detections: the grid of annotated images."""

import cv2
import numpy as np
import pytest

from stages.draw import write_grid, write_png
from stages.errors import UserError


def test_grid_tiles_pictures_row_by_row_each_row_as_tall_as_its_tallest(tmp_path):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    pictures = []
    for k, (height, colour) in enumerate(zip((100, 300, 50), colours, strict=True)):
        pictures.append(tmp_path / f"{k}.png")
        write_png(pictures[-1], np.full((height, 200, 3), colour, np.uint8))
    write_grid(tmp_path / "grid.png", pictures, cell_width=100)
    grid = cv2.cvtColor(cv2.imread(str(tmp_path / "grid.png")), cv2.COLOR_BGR2RGB)
    gap = 8
    assert grid.shape == (gap + 150 + gap + 25 + gap, gap + 2 * (100 + gap), 3)
    assert tuple(grid[gap, gap]) == colours[0] and tuple(grid[gap + 49, gap]) == colours[0]
    assert tuple(grid[gap + 50, gap]) == (255, 255, 255)
    assert tuple(grid[gap, 2 * gap + 100]) == colours[1]
    assert tuple(grid[2 * gap + 150, gap]) == colours[2]


def test_a_picture_that_is_not_an_image_is_named(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match=r"broken\.png: not an image"):
        write_grid(tmp_path / "grid.png", [tmp_path / "broken.png"])
