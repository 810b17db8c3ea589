"""The dataset choices that options and the command line name without loading the readers (torch): the
layouts (``FORMATS``) and the demo set's size (``DemoOptions``)."""

from __future__ import annotations

from dataclasses import dataclass

from stages.core.errors import UserError

FORMATS = ("voc", "coco", "yolo")
"""The dataset layouts ``stages.datasets.formats`` reads and ``rcnn data convert`` writes."""


@dataclass(frozen=True)
class DemoOptions:
    """Size and seed of the demo dataset; trainval is train + val. Each image has ``min_objects`` to
    ``max_objects`` objects, their sizes log-uniform between ``min_size`` and ``max_size`` px (the longer
    side); those with a longer side below ``difficult_below`` px are marked difficult (0: none). A dense
    scene of small objects: ``min_objects=40, max_objects=80, min_size=12, max_size=30``."""

    seed: int = 0
    num_train: int = 100
    num_val: int = 50
    num_test: int = 100
    min_objects: int = 2
    max_objects: int = 6
    min_size: int = 16
    max_size: int = 200
    difficult_below: int = 24

    def __post_init__(self) -> None:

        if not 1 <= self.min_objects <= self.max_objects:
            raise UserError(
                f"objects an image: {self.min_objects} to {self.max_objects}; give 1 <= min <= max"
            )
        if not 8 <= self.min_size <= self.max_size:
            raise UserError(f"object sizes: {self.min_size} to {self.max_size} px; give 8 <= min <= max")
