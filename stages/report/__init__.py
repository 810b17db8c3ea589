"""A run's results in one place: the terminal summary (``summary``) and the HTML page (``page``)."""
