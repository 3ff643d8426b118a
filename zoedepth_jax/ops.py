"""Resizes that reproduce `torch.nn.functional.interpolate` exactly.

`jax.image.resize` has no `align_corners` and antialiases when shrinking, so ZoeDepth's resizes go through
here. Source indices and weights depend only on static shapes: they are numpy constants at trace time, computed
in the tensor's float type as torch computes them, and the resize of one axis is a few gathers and a weighted sum
(two taps for bilinear, four for bicubic). Like torch's CPU kernel, the width is resized first, then the height.
The gradient of a JAX resize is gathers too: each input sample gathers the outputs that read it (`_resample`).

A numpy array is resized with numpy (host-side pre- and post-processing: no compilation per image size);
anything else (a JAX array, a tracer under `jit`) with `jax.numpy`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# The cubic convolution coefficient torch uses for mode="bicubic" (Keys' kernel with a = -0.75, as OpenCV).
CUBIC_A = -0.75


def _fma(a, b, c, dtype) -> np.ndarray:
    """`a * b + c` as a fused multiply-add: for float32 operands the float64 product is exact, and the sum is
    rounded (to float64, then to float32) instead of the product and the sum each to float32.

    torch's compiled CPU kernels contract some of their float expressions into fused multiply-adds; doing the
    same where they do makes the coordinates and weights below bit-identical to those of torch 2.13 on x86
    (measured; unfused, a source coordinate is up to 1.5e-5 off, which moves a bilinear output by that much times
    the step between neighbouring samples). A build that contracts differently differs by an ulp of a weight.
    """
    return (np.asarray(a, np.float64) * np.asarray(b, np.float64) + np.asarray(c, np.float64)).astype(dtype)


def _source_index(in_size: int, out_size: int, align_corners: bool, cubic: bool, dtype, factor=None) -> np.ndarray:
    """torch's `area_pixel_compute_source_index` for every output index, computed in `dtype` as torch does.
    `factor`: the scale factor torch was given instead of a size (it then samples at 1 / factor, not in / out)."""
    dst = np.arange(out_size).astype(dtype)
    if align_corners:
        scale = dtype(in_size - 1) / dtype(out_size - 1) if out_size > 1 else dtype(0)
        return scale * dst
    # Without a factor the scale is in/out; with one it is 1 / factor, computed in float64 and then rounded. Linear
    # modes clamp negative sources to 0; cubic keeps them and lets the border clamp of the taps handle them.
    scale = dtype(in_size) / dtype(out_size) if factor is None else dtype(1.0 / factor)
    src = _fma(scale, dst + dtype(0.5), dtype(-0.5), dtype)
    return src if cubic else np.maximum(src, dtype(0))


def _floor_and_fraction(src: np.ndarray, in_size: int) -> tuple[np.ndarray, np.ndarray]:
    """torch's `guard_index_and_lambda`: the sample at or left of `src` (at most the last one) and the fraction
    past it, clamped to [0, 1]."""
    lower = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    fraction = np.clip(src - lower.astype(src.dtype), 0, 1).astype(src.dtype)
    return lower, fraction


def _linear_taps(in_size: int, out_size: int, align_corners: bool, dtype, factor=None) -> tuple[np.ndarray, np.ndarray]:
    """Indices [2, out] and weights [2, out] of the two samples torch's bilinear kernel combines."""
    source = _source_index(in_size, out_size, align_corners, False, dtype, factor)
    lower, fraction = _floor_and_fraction(source, in_size)
    indices = np.stack([lower, np.minimum(lower + 1, in_size - 1)])
    return indices, np.stack([dtype(1) - fraction, fraction])


def _cubic_taps(in_size: int, out_size: int, align_corners: bool, dtype, factor=None) -> tuple[np.ndarray, np.ndarray]:
    """Indices [4, out] and weights [4, out] of torch's bicubic kernel: samples lower-1 .. lower+2 clamped to
    the image (border replication), weights of the cubic convolution with a = -0.75 at distances 1+t, t, 1-t,
    2-t, each evaluated with torch's polynomial, in torch's order of operations."""
    lower, t = _floor_and_fraction(_source_index(in_size, out_size, align_corners, True, dtype, factor), in_size)
    a = dtype(CUBIC_A)

    # ((a+2)d - (a+3))d² + 1 for |d| <= 1 and ((ad - 5a)d + 8a)d - 4a for 1 < |d| < 2, with torch's contractions.
    def near(d):
        return _fma(a + dtype(2), d, -(a + dtype(3)), dtype) * d * d + dtype(1)

    def far(d):
        return _fma(_fma(a, d, -(dtype(5) * a), dtype), d, dtype(8) * a, dtype) * d - dtype(4) * a

    one = dtype(1)
    weights = np.stack([far(t + one), near(t), near(one - t), far((one - t) + one)])
    indices = np.stack([np.clip(lower - 1 + k, 0, in_size - 1) for k in range(4)])
    return indices, weights


def _resize_axis(x, axis: int, out_size: int, align_corners: bool, taps, factor=None) -> jnp.ndarray | np.ndarray:
    in_size = x.shape[axis]
    if in_size == out_size and factor is None:  # torch copies: every tap but one has weight exactly 0
        return x
    dtype = np.float64 if x.dtype == np.float64 else np.float32  # torch's compute type for the coordinates
    indices, weights = taps(in_size, out_size, align_corners, dtype, factor)
    if isinstance(x, np.ndarray):
        return _weighted_taps(np, x, axis, indices, weights)
    return _resample(axis, indices, weights, in_size)(x)


def _weighted_taps(xp, x, axis: int, indices: np.ndarray, weights: np.ndarray):
    """sum over taps t of `x` taken at `indices[t]` along `axis`, times `weights[t]`, in `x`'s dtype and in tap
    order. indices, weights: [taps, out]."""
    shape = [1] * x.ndim
    shape[axis] = indices.shape[1]
    result = None
    for index, weight in zip(indices, weights, strict=True):
        term = xp.take(x, index, axis=axis) * xp.asarray(weight.reshape(shape), dtype=x.dtype)
        result = term if result is None else result + term
    return result


def _resample(axis: int, indices: np.ndarray, weights: np.ndarray, in_size: int):
    """The resize of one axis of a JAX array, `_weighted_taps` in `x`'s dtype, as a function whose gradient is
    gathers as well: each input sample gathers the outputs it contributed to (`_transposed_taps`), computed in
    at least fp32 and rounded once to x's dtype. Autodiff's gradient of a gather is a scatter-add, which XLA:CPU
    runs an element at a time, several times slower than the resize itself (benchmarks/HISTORY.md)."""

    @jax.custom_vjp
    def resample(x):
        return _weighted_taps(jnp, x, axis, indices, weights)

    def forward(x):
        return resample(x), None

    def backward(_, gradient):  # the output's dtype is x's
        compute = jnp.promote_types(gradient.dtype, jnp.float32)
        sources, source_weights = _transposed_taps(indices, weights, in_size)
        d_x = _weighted_taps(jnp, gradient.astype(compute), axis, sources, source_weights)
        return (d_x.astype(gradient.dtype),)

    resample.defvjp(forward, backward)
    return resample


def _transposed_taps(indices: np.ndarray, weights: np.ndarray, in_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The taps of a resize's transpose: for each of the `in_size` input samples, the outputs that read it and
    their summed weights, in output order, padded with weight 0 to the largest count. [taps, out] ->
    (indices [k, in_size], weights [k, in_size], float64)."""
    outputs = np.broadcast_to(np.arange(indices.shape[1]), indices.shape).ravel()
    pairs, position = np.unique(indices.ravel() * indices.shape[1] + outputs, return_inverse=True)
    summed = np.bincount(position.ravel(), weights=weights.ravel().astype(np.float64))
    pairs, summed = pairs[summed != 0], summed[summed != 0]
    sources, readers = pairs // indices.shape[1], pairs % indices.shape[1]  # sorted by source, then output
    counts = np.bincount(sources, minlength=in_size)
    rank = np.arange(len(pairs)) - np.repeat(np.cumsum(counts) - counts, counts)
    transposed_indices = np.zeros((max(int(counts.max(initial=0)), 1), in_size), np.int64)
    transposed_weights = np.zeros(transposed_indices.shape, np.float64)
    transposed_indices[rank, sources] = readers
    transposed_weights[rank, sources] = summed
    return transposed_indices, transposed_weights


def _resize(x, size, align_corners, axes, taps, factors=(None, None)):
    height_axis, width_axis = axes
    x = _resize_axis(x, width_axis, size[1], align_corners, taps, factors[1])
    return _resize_axis(x, height_axis, size[0], align_corners, taps, factors[0])


def resize_bilinear(x, size: tuple[int, int], align_corners: bool, axes: tuple[int, int] = (1, 2)):
    """Bilinear resize of the two `axes` of `x` (NHWC by default) to `size`, as torch's `interpolate`.

    Matches `interpolate(mode="bilinear", size=size, align_corners=...)`; with `align_corners=True` it also
    matches any `scale_factor`, since torch then ignores the factor and aligns the corner samples.
    """
    return _resize(x, size, align_corners, axes, _linear_taps)


def resize_bicubic(
    x,
    size: tuple[int, int],
    align_corners: bool = False,
    axes: tuple[int, int] = (1, 2),
    scale_factors: tuple[float, float] | None = None,
):
    """Bicubic resize of the two `axes` of `x` (NHWC by default) to `size`, as torch's `interpolate`.

    Matches `interpolate(mode="bicubic", size=size, align_corners=..., antialias=False)`: cubic convolution with
    a = -0.75 over four samples per axis, indices past the border clamped to the edge sample. No clamping of the
    values: like torch on float tensors, the result can overshoot the input's range near edges.

    `scale_factors` (height, width), with `align_corners=False`: matches `interpolate(scale_factor=...)` instead,
    where `size` is the size torch derives from them (the floor of input size x factor): torch then places the
    samples by the factors rather than by the sizes, and resamples an axis even where its size does not change.
    """
    return _resize(x, size, align_corners, axes, _cubic_taps, scale_factors or (None, None))
