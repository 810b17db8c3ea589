"""A trained method at work: a split's detections scored (``evaluate``, ``rcnn evaluate``), any image a
user has (``detect``, ``rcnn detect``), and detections as other tools' result files (``export``)."""
