"""Detections: from region scores to boxes (``postprocess``), the detections file every method writes
(``files``), and pictures of them (``draw``)."""
