"""Checkpoints: finding, reading, renaming and placing them (`loading.py` tells the way down), and saving them."""
