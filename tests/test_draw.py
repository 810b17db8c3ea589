"""Pictures of detections: the grid of annotated images."""

import cv2
import numpy as np
import pytest

from stages.core.errors import UserError
from stages.detections.draw import draw_detections, write_grid, write_png


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


def test_labels_grow_with_the_picture_so_that_a_grid_cell_shows_them_alike(tmp_path):
    """Shrunk to a grid's 400-pixel cell, a label is 11 to 14 pixels tall whatever the picture's size (a
    2,500-pixel photo's was 2 pixels when labels had one size); 400 pixels and less keep that size."""

    def label_height(side: int) -> int:
        image = np.full((side, side, 3), 255, np.uint8)
        box = np.array([[side * 0.3, side * 0.5, side * 0.6, side * 0.8]])
        drawn = draw_detections(image, box, np.array([1]), np.array([0.9]), ["tree"])
        rows = np.flatnonzero((drawn[: int(side * 0.5)] != 255).any(axis=(1, 2)))  # the label, above the box
        return int(rows.max() - rows.min() + 1)

    for side in (400, 500, 1000, 2500, 4000):
        assert 11 <= label_height(side) * 400 / side <= 14, side
    assert label_height(200) == label_height(400)
