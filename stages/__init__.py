"""The rcnn library: the lineage's stages, one folder a concern, each importing only the folders above it
in this list (``tests/test_layers.py``): ``core``, ``datasets``, ``runs``, ``networks`` and ``proposals``,
``training`` and ``detections``, ``cache`` and ``evaluation``, ``methods``, ``inference`` and ``config``,
``report``, ``pipeline`` and ``bench``. docs/run-folder.md maps every module."""
