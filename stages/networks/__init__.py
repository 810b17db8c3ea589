"""The networks and their parts: backbones (conv1..fc7), the images they take (``inputs``), R-CNN's
region warping, mixed precision, and model files."""
