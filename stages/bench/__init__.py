"""``rcnn bench``: throughput figures measured on the user's machine."""
