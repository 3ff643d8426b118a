"""Depth maps as images: the 16-bit PNGs and the colour previews the command line writes.

Pure numpy + PIL (no torch, no matplotlib). Two kinds of map, two encodings:
  - depth in meters (float32): the 16-bit PNGs hold millimetres (uint16), so 1.2345 m is stored as 1235 and
    anything at or beyond 65.535 m as 65535 (`depth_to_png16`);
  - relative depth (a relative Depth Anything model's affine-invariant inverse depth: larger is nearer, no unit):
    normalised per image between its minimum and maximum, v = round((d - min) / (max - min) * 65535), so 0 is the
    farthest pixel and 65535 the nearest; the minimum and maximum are stored in the PNG's text chunks
    `relative_depth_min` and `relative_depth_max`, from which d = min + v / 65535 * (max - min)
    (`relative_depth_to_png16`). The values mean nothing in meters.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw
from PIL.PngImagePlugin import PngInfo

# A 5-stop magma-like palette (dark purple-black to pale yellow), interpolated linearly in RGB.
_PALETTE_STOPS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
_PALETTE_RGB = np.array(
    [
        [0, 0, 4],
        [81, 18, 124],
        [183, 55, 121],
        [252, 137, 97],
        [252, 253, 191],
    ],
    dtype=np.float64,
)


def depth_to_png16(depth_m: np.ndarray) -> Image.Image:
    """A 16-bit greyscale ("I;16") image of the depth in millimetres: rounded, clipped to 0..65535 (NaN -> 0)."""
    mm = np.rint(np.asarray(depth_m, dtype=np.float64) * 1000.0)
    mm = np.nan_to_num(mm, nan=0.0, posinf=65535.0, neginf=0.0)
    mm = np.clip(mm, 0, 65535).astype(np.uint16)
    return Image.fromarray(mm)


PNG16_MAX = 65535  # the largest value of a 16-bit PNG


def relative_depth_to_png16(relative_depth: np.ndarray) -> tuple[Image.Image, PngInfo]:
    """A 16-bit greyscale ("I;16") image of relative depth, normalised between its finite minimum (0) and maximum
    (65535), and the PNG text chunks that state the two (see the module docstring). Non-finite values, and every
    pixel of a constant map, are stored as 0."""
    depth = np.asarray(relative_depth, dtype=np.float64)
    finite = np.isfinite(depth)
    low, high = (float(depth[finite].min()), float(depth[finite].max())) if finite.any() else (0.0, 0.0)
    span = high - low if high > low else 1.0
    levels = np.rint(np.clip((np.where(finite, depth, low) - low) / span, 0.0, 1.0) * PNG16_MAX)
    text = PngInfo()
    text.add_text("relative_depth_min", repr(low))
    text.add_text("relative_depth_max", repr(high))
    return Image.fromarray(levels.astype(np.uint16)), text


def colorize(depth_m: np.ndarray) -> Image.Image:
    """An RGB picture of a depth map for people to look at: near is bright, far is dark.

    Depths are normalised between their 2nd and 98th percentiles (so a few outliers do not wash out the picture)
    and mapped through a small built-in magma-like palette. Non-finite depths are drawn as far (dark).
    """
    return _in_palette(1.0 - _between_percentiles(depth_m))


def colorize_relative(relative_depth: np.ndarray) -> Image.Image:
    """`colorize` for relative depth (inverse depth: larger is nearer): near is bright, far is dark, non-finite
    values drawn as far."""
    return colorize(-np.asarray(relative_depth, dtype=np.float64))


def colorize_uncertainty(depth_std_m: np.ndarray) -> Image.Image:
    """An RGB picture of a depth_std map: uncertain is bright, certain dark, in the palette of `colorize`
    (normalised between the 2nd and 98th percentiles; non-finite values drawn as certain)."""
    return _in_palette(_between_percentiles(depth_std_m))


CAPTION_HEIGHT = 40  # pixels under a side-by-side picture, for its labels and caption


def depth_and_uncertainty_picture(depth_m: np.ndarray, depth_std_m: np.ndarray, caption: str) -> Image.Image:
    """[depth preview | uncertainty map] side by side (`colorize`, `colorize_uncertainty`), labelled, with
    `caption` under them: the README's example picture."""
    depth, uncertainty = colorize(depth_m), colorize_uncertainty(depth_std_m)
    width, height = depth.size
    canvas = Image.new("RGB", (2 * width, height + CAPTION_HEIGHT), "white")
    canvas.paste(depth, (0, 0))
    canvas.paste(uncertainty, (width, 0))
    draw = ImageDraw.Draw(canvas)
    draw.text((8, height + 8), "depth (near = bright)", fill="black")
    draw.text((width + 8, height + 8), "depth std (uncertain = bright)", fill="black")
    draw.text((8, height + 22), caption, fill=(160, 0, 0))
    return canvas


def depth_preview(depth: np.ndarray) -> Image.Image:
    """transformers' `depth` image: the depth map scaled to 0..255 between its min and max, mode "L"."""
    depth = np.asarray(depth, dtype=np.float32)
    span = depth.max() - depth.min()
    scaled = (depth - depth.min()) / span if span > 0 else np.zeros_like(depth)
    return Image.fromarray((scaled * 255).astype(np.uint8))


def _between_percentiles(values: np.ndarray) -> np.ndarray:
    """`values` mapped to 0..1 between their 2nd and 98th percentiles (clipped); non-finite values to 1."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    low, high = np.percentile(values[finite], [2, 98]) if finite.any() else (0.0, 1.0)
    span = high - low if high > low else 1.0
    return np.where(finite, np.clip((values - low) / span, 0.0, 1.0), 1.0)


def _in_palette(levels: np.ndarray) -> Image.Image:
    """0..1 levels [H, W] -> an RGB image through the palette above (0 dark, 1 bright)."""
    rgb = np.stack([np.interp(levels, _PALETTE_STOPS, _PALETTE_RGB[:, c]) for c in range(3)], axis=-1)
    return Image.fromarray(np.rint(rgb).astype(np.uint8))  # uint8 [H, W, 3] -> mode "RGB"
