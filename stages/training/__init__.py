"""How networks are trained: the shared SGD solver (``solver``), regions against ground truth
(``matching``), the balanced foreground/background sampler, R-CNN's warped windows, and supervised
pre-training of a backbone (``pretrain``)."""
