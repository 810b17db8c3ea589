"""Region proposals: ``rcnn propose`` and the proposals file (``propose``), selective search's worker
(``selective_search``)."""
