"""Scoring detections: VOC's AP (``metrics``, which also picks the metric) and COCO's by pycocotools
(``coco``)."""
