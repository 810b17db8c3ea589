"""The choices of the test stages' options, named without loading torch: the result-file formats of
``rcnn export``."""

from __future__ import annotations

EXPORT_FORMATS = ("coco", "voc")
