"""Pinhole camera intrinsics `(fx, fy, cx, cy)`, in pixels.

Pixel coordinates are the integer pixel indices: the centre of column u is at x = u (u = 0..W-1) and of row v at
y = v (v = 0..H-1), so the image spans [-0.5, W - 0.5] x [-0.5, H - 0.5]. A point (X, Y, Z) of the camera frame
(x right, y down, z forward) projects to u = fx * X / Z + cx, v = fy * Y / Z + cy.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

from zoedepth_jax.errors import ArgumentError

# The camera the original ZoeDepth assumes when the real one is unknown (isl-org `zoedepth/utils/geometry.py`,
# `get_intrinsics`, used by its image-to-3D demo): a 55 degree field of view across the image's width.
DEFAULT_FOV_DEGREES = 55.0

Intrinsics = tuple[float, float, float, float]


def _check_size(name: str, size: Sequence[int]) -> tuple[int, int]:
    """(height, width) as two positive ints, or an ArgumentError naming `name` and what was given."""
    try:
        height, width = (operator.index(side) for side in size)
    except (TypeError, ValueError):
        height = width = 0
    if height <= 0 or width <= 0:
        raise ArgumentError(f"{name} = {size!r}: expected (height, width), two positive integers")
    return height, width


def intrinsics_from_fov(height: int, width: int, fov_degrees: float = DEFAULT_FOV_DEGREES) -> Intrinsics:
    """The original ZoeDepth's camera for an image of `height` x `width` pixels: `fov_degrees` across the width,
    square pixels (fx = fy = 0.5 * width / tan(fov / 2)) and the principal point at (width / 2, height / 2).

    The principal point is the original's choice, kept so that points agree with it; in integer pixel
    coordinates the image's centre is at ((width - 1) / 2, (height - 1) / 2), half a pixel from it.
    """
    _check_size("(height, width)", (height, width))
    if not 0.0 < fov_degrees < 180.0:
        raise ArgumentError(f"fov_degrees = {fov_degrees!r}: expected a field of view strictly between 0 and 180")
    focal = 0.5 * width / math.tan(0.5 * math.radians(fov_degrees))
    return focal, focal, 0.5 * width, 0.5 * height


def scale_intrinsics(intrinsics: Sequence[float], from_size: Sequence[int], to_size: Sequence[int]) -> Intrinsics:
    """Intrinsics given in pixels of a `from_size` = (height, width) image, for the same view resampled to
    `to_size`, with the image's outer edges kept on each other (as a resize with `align_corners=False` does,
    which is how the depth map is brought back to the photo's size).

    With pixel centres at the integer indices, a position x of the old image lies at (x + 0.5) * s - 0.5 in the new
    one, s = W' / W across (H' / H down). So fx and fy scale by s, and cx' = (cx + 0.5) * s - 0.5 (cy likewise):
    the image's centre (W - 1) / 2 goes to (W' - 1) / 2.
    """
    if len(intrinsics) != 4:
        raise ArgumentError(f"intrinsics = {intrinsics!r}: expected four numbers (fx, fy, cx, cy)")
    from_height, from_width = _check_size("from_size", from_size)
    to_height, to_width = _check_size("to_size", to_size)
    fx, fy, cx, cy = (float(value) for value in intrinsics)
    scale_x, scale_y = to_width / from_width, to_height / from_height
    return fx * scale_x, fy * scale_y, (cx + 0.5) * scale_x - 0.5, (cy + 0.5) * scale_y - 0.5


def parse_intrinsics(text: str) -> Intrinsics:
    """`"FX,FY,CX,CY"` (pixels, as a command-line option gives them) -> four floats; fx and fy must be positive."""
    parts = text.split(",")
    if len(parts) != 4:
        raise ArgumentError(f"intrinsics {text!r}: expected four comma-separated numbers FX,FY,CX,CY")
    try:
        values = tuple(float(part) for part in parts)
    except ValueError:
        raise ArgumentError(f"intrinsics {text!r}: expected four comma-separated numbers FX,FY,CX,CY") from None
    if not all(math.isfinite(value) for value in values):
        raise ArgumentError(f"intrinsics {text!r}: every value must be finite")
    if values[0] <= 0 or values[1] <= 0:
        raise ArgumentError(f"intrinsics {text!r}: the focal lengths FX and FY must be positive")
    return values
