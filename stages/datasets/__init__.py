"""Datasets: the records every stage reads (``records``), the VOC, COCO and YOLO readers behind one
``load_dataset`` (``formats``), conversion between layouts (``convert``), the demo set (``demo``), image
files decoded and checked (``image_files``), and the layout and demo choices (``options``)."""
