"""Training recipes for the ``spatial`` model: named settings files the trainer reads (``--recipe NAME``)."""
