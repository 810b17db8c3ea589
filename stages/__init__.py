"""rcnn library."""
