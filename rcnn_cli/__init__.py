"""rcnn command line."""
