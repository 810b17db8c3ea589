"""``python -m rcnn_cli`` (and ``torchrun -m rcnn_cli``) runs the command line."""

from rcnn_cli.app import main

main()
