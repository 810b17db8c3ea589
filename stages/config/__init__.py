"""Run configs: the TOML file that says every option of every stage ``rcnn run`` runs (``run_config``)."""
