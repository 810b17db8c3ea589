"""``rcnn study``: a paper's ablation table run as variants of one config, what they share made once."""
