"""The dataset choices that options and the command line name without loading the readers (torch): the
layouts (``FORMATS``) and the demo set's size (``DemoOptions``)."""

from __future__ import annotations

from dataclasses import dataclass

FORMATS = ("voc", "coco", "yolo")
"""The dataset layouts ``stages.datasets.formats`` reads and ``rcnn data convert`` writes."""


@dataclass(frozen=True)
class DemoOptions:
    """Size and seed of the demo dataset; trainval is train + val."""

    seed: int = 0
    num_train: int = 100
    num_val: int = 50
    num_test: int = 100
    min_objects: int = 2
    max_objects: int = 6
