"""Entry points: the top layer, free to use every other layer."""
