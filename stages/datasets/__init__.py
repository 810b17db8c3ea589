"""Datasets: the records every stage reads (``records``), the VOC reader (``voc``) and the demo set
(``demo``)."""
