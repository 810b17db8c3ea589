"""``rcnn run``: a config's stages in dependency order, each skipped when up to date (``run``)."""
