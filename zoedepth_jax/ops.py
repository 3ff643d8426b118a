"""Resizes that reproduce `torch.nn.functional.interpolate` exactly.

`jax.image.resize` has no `align_corners` and antialiases when shrinking, so ZoeDepth's resizes go through
here. Source coordinates and weights depend only on static shapes: they are numpy constants at trace time,
and the resize itself is two gathers and a lerp per axis.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def _linear_taps(in_size: int, out_size: int, align_corners: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of the two source samples and the weight of the second one, as torch computes them."""
    dst = np.arange(out_size, dtype=np.float64)
    if align_corners:
        scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
        src = dst * scale
    else:
        # torch's area_pixel_compute_source_index with a size (not a scale factor) given: negative clamps to 0.
        src = np.maximum((dst + 0.5) * (in_size / out_size) - 0.5, 0.0)
    src = src.astype(np.float32)  # torch computes the coordinate in the tensor's float type
    lower = np.minimum(np.floor(src).astype(np.int32), in_size - 1)
    upper = np.minimum(lower + 1, in_size - 1)
    weight = (src - lower).astype(np.float32)
    return lower, upper, weight


def _resize_axis(x: jnp.ndarray, axis: int, out_size: int, align_corners: bool) -> jnp.ndarray:
    in_size = x.shape[axis]
    if in_size == out_size:
        return x
    lower, upper, weight = _linear_taps(in_size, out_size, align_corners)
    shape = [1] * x.ndim
    shape[axis] = out_size
    weight = jnp.asarray(weight.reshape(shape), dtype=x.dtype)
    x_lower = jnp.take(x, lower, axis=axis)
    x_upper = jnp.take(x, upper, axis=axis)
    return x_lower + weight * (x_upper - x_lower)


def resize_bilinear(x: jnp.ndarray, size: tuple[int, int], align_corners: bool, axes: tuple[int, int] = (1, 2)):
    """Bilinear resize of the two `axes` of `x` (NHWC by default) to `size`, as torch's `interpolate`.

    Matches `interpolate(mode="bilinear", size=size, align_corners=...)`; with `align_corners=True` it also
    matches any `scale_factor`, since torch then ignores the factor and aligns the corner samples.
    """
    height_axis, width_axis = axes
    x = _resize_axis(x, height_axis, size[0], align_corners)
    return _resize_axis(x, width_axis, size[1], align_corners)
