"""Images paired with ground-truth depth, as `zoedepth-jax eval` and fine-tuning read them.

Two ways to name the pairs:
  a folder  every image `<name>.<ext>` (searched recursively) with its ground truth beside it as
            `<name>_depth.png` (`find_pairs`);
  a list    a text file with one pair per line, `IMAGE DEPTH`, paths relative to the file's folder (or absolute);
            further fields (the original ZoeDepth split files carry the focal length third) are ignored, `#`
            starts a comment, and paths with spaces are quoted as in a shell (`read_pair_list`).
Ground truth is a 16-bit greyscale PNG holding depth x `depth_scale` (0 = no depth): 1000 per meter for NYU-v2
exports and `zoedepth-jax predict`, 256 for KITTI (`read_depth_png`).
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import numpy as np
from PIL import Image

from zoedepth_jax.errors import ArgumentError, ImageError
from zoedepth_jax.inference.folders import IMAGE_SUFFIXES

DEPTH_SUFFIX = "_depth.png"


def find_pairs(folder: Path) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """(image, ground truth) pairs in `folder` (recursively, sorted), and the images that have no ground truth."""
    images = sorted(
        p
        for p in Path(folder).rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.endswith(DEPTH_SUFFIX)
    )
    pairs, unpaired = [], []
    for image in images:
        depth = image.with_name(image.stem + DEPTH_SUFFIX)
        if depth.is_file():
            pairs.append((image, depth))
        else:
            unpaired.append(image)
    return pairs, unpaired


def read_pair_list(path: str | os.PathLike) -> list[tuple[Path, Path]]:
    """The (image, ground truth) pairs a list file names, in its order. A line with fewer than two fields, or a
    file that does not exist, is an ArgumentError naming the file and line; whether the files exist is left to
    the reader (`training.data.check_pairs` checks them all before training)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ArgumentError(f"{path}: cannot read the list of (image, depth) pairs: {e}") from None
    pairs = []
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            fields = shlex.split(line, comments=True)
        except ValueError as e:
            raise ArgumentError(f"{path}, line {number}: {e}") from None
        if not fields:
            continue
        if len(fields) < 2:
            raise ArgumentError(f"{path}, line {number}: expected IMAGE DEPTH, got {line.strip()!r}")
        pairs.append((path.parent / fields[0], path.parent / fields[1]))  # an absolute field replaces the folder
    return pairs


def read_depth_png(path: Path, depth_scale: float) -> np.ndarray:
    """A 16-bit greyscale PNG as float32 meters `[H, W]` (value / depth_scale; 0 stays 0, i.e. no depth)."""
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            values = np.asarray(image)
    except (OSError, ValueError) as e:
        raise ImageError(f"{path}: cannot read the ground truth: {e}") from None
    check_depth_mode(path, mode)
    if values.ndim != 2:
        raise ImageError(f"{path}: ground truth must be a 16-bit greyscale PNG, got an array of shape {values.shape}")
    return (values.astype(np.float64) / depth_scale).astype(np.float32)


def check_depth_mode(path: Path, mode: str) -> None:
    """An ImageError unless `mode` (Pillow's) is one a 16-bit greyscale PNG opens in."""
    if mode not in ("I;16", "I;16B", "I"):
        raise ImageError(f"{path}: ground truth must be a 16-bit greyscale PNG, got mode {mode}")
