"""Image helpers for the command line: read an image, prepare it for the model, write depth maps.

Pure numpy + PIL (no torch, no matplotlib). Depth maps are float32 meters throughout; the 16-bit PNGs this module
writes hold millimetres (uint16), so 1.2345 m is stored as 1235 and anything at or beyond 65.535 m as 65535.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from zoedepth_jax.errors import ImageError

# The ZoeDepth image processor's target size (height, width), its size multiple, and its normalisation.
TARGET_SIZE = (384, 512)
SIZE_MULTIPLE = 32
MEAN = 0.5
STD = 0.5

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


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """Reads an image file as `uint8 [H, W, 3]` RGB.

    Any mode PIL reads is converted with `Image.convert("RGB")`: an alpha channel (RGBA, LA, PA) is dropped, not
    composited; greyscale (L), palette (P), CMYK and the like are expanded to RGB. EXIF orientation is not applied
    (the pixels are used as stored, as the transformers image processor does). A missing, unreadable or corrupt file
    is an `ImageError` naming the path and the reason.
    """
    try:
        with Image.open(path) as image:
            image.load()  # Image.open is lazy: decode now, so that a truncated file fails here
            rgb = image.convert("RGB")
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory, not an image file") from None
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        # PIL reports unknown formats as UnidentifiedImageError (an OSError), damaged data as OSError,
        # SyntaxError or EOFError depending on the decoder.
        raise ImageError(f"{path}: cannot read as an image ({type(e).__name__}: {e})") from None
    array = np.asarray(rgb, dtype=np.uint8)
    if array.ndim != 3 or array.shape[2] != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageError(f"{path}: decoded to an unusable array of shape {array.shape}")
    return array


def _constrain_to_multiple(value: float, multiple: int = SIZE_MULTIPLE) -> int:
    return max(multiple, int(np.round(value / multiple)) * multiple)


def preprocess_size(height: int, width: int, target: tuple[int, int] = TARGET_SIZE) -> tuple[int, int]:
    """The (height, width) the model sees for a `height x width` image: transformers' keep_aspect_ratio rule.

    Both sides are scaled by whichever of target_h / height and target_w / width is closer to 1 (the image is
    scaled as little as possible), then each side is rounded to the nearest multiple of 32 (at least 32).
    """
    scale_h = target[0] / height
    scale_w = target[1] / width
    scale = scale_w if abs(1 - scale_w) < abs(1 - scale_h) else scale_h
    return _constrain_to_multiple(scale * height), _constrain_to_multiple(scale * width)


def simple_preprocess(image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """PROVISIONAL stand-in for transformers' `ZoeDepthImageProcessor`; NOT the exact HF processor.

    Returns `(pixel_values [1, H', W', 3] float32, (H, W))` where (H, W) is the source size. The image is resized
    with PIL bilinear to the size `preprocess_size` gives (384x512 for a 480x640 image), rescaled to [0, 1] and
    normalised with mean = std = 0.5. Unlike the HF processor it does no reflect padding and resizes with PIL
    rather than the processor's own interpolation, so depths differ slightly from transformers' pipeline; a later
    version replaces this function with an exact port.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ImageError(f"expected a uint8 [H, W, 3] image, got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    new_height, new_width = preprocess_size(height, width)
    resized = Image.fromarray(image).resize((new_width, new_height), Image.Resampling.BILINEAR)
    pixels = np.asarray(resized, dtype=np.float32) / 255.0
    pixels = (pixels - MEAN) / STD
    return pixels[None], (height, width)


def resize_depth(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize (PIL mode "F") of a float32 `[h, w]` depth map to `size = (H, W)`; returns float32 `[H, W]`."""
    depth = np.asarray(depth, dtype=np.float32)
    if depth.ndim != 2:
        raise ImageError(f"expected a [h, w] depth map, got shape {depth.shape}")
    height, width = size
    if depth.shape == (height, width):
        return depth.copy()
    resized = Image.fromarray(depth)  # float32 -> mode "F"
    if resized.mode != "F":
        raise ImageError(f"PIL read the depth map as mode {resized.mode!r}, expected 'F'")
    resized = resized.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32)


def depth_to_png16(depth_m: np.ndarray) -> Image.Image:
    """A 16-bit greyscale ("I;16") image of the depth in millimetres: rounded, clipped to 0..65535 (NaN -> 0)."""
    mm = np.rint(np.asarray(depth_m, dtype=np.float64) * 1000.0)
    mm = np.nan_to_num(mm, nan=0.0, posinf=65535.0, neginf=0.0)
    mm = np.clip(mm, 0, 65535).astype(np.uint16)
    return Image.fromarray(mm)


def colorize(depth_m: np.ndarray) -> Image.Image:
    """An RGB picture of a depth map for people to look at: near is bright, far is dark.

    Depths are normalised between their 2nd and 98th percentiles (so a few outliers do not wash out the picture)
    and mapped through a small built-in magma-like palette. Non-finite depths are drawn as far (dark).
    """
    depth = np.asarray(depth_m, dtype=np.float64)
    finite = np.isfinite(depth)
    if finite.any():
        low, high = np.percentile(depth[finite], [2, 98])
    else:
        low, high = 0.0, 1.0
    span = high - low if high > low else 1.0
    nearness = 1.0 - np.clip((depth - low) / span, 0.0, 1.0)
    nearness = np.where(finite, nearness, 0.0)
    rgb = np.stack([np.interp(nearness, _PALETTE_STOPS, _PALETTE_RGB[:, c]) for c in range(3)], axis=-1)
    return Image.fromarray(np.rint(rgb).astype(np.uint8))  # uint8 [H, W, 3] -> mode "RGB"
