"""One module per page group; each defines ``router`` and ``create_app`` includes it."""
