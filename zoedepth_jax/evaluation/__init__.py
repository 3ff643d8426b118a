"""Evaluation: `metrics` (the original's depth metrics and crops) and `folders` (`zoedepth-jax eval` over a folder
of images with ground-truth depth)."""
