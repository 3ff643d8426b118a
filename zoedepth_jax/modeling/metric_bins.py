"""The metric-bins machinery: seed bin regressor, projector, attractor layers and the conditional log-binomial.

Reference: transformers `models/zoedepth/modeling_zoedepth.py` and isl-org ZoeDepth `models/layers/`.
Everything here runs in fp32 whatever the compute dtype: bins are sorted, normalised and summed, and the
log-binomial takes logs of probabilities near 0 and 1. Maps are NHWC with bins in the last axis.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from zoedepth_jax.modeling.layers import TILE_ROWS, conv, cpu_forms, gelu, rows_per_step, sum_in_order
from zoedepth_jax.ops import resize_bilinear

# Quirk kept for the released weights: transformers and the original code call the inverse attractor with its
# default strength alpha=300, gamma=2, not the config's `attractor_alpha` (1000) / `attractor_gamma`.
ATTRACTOR_ALPHA = 300.0
ATTRACTOR_GAMMA = 2


def inverse_attractor(dx: jnp.ndarray) -> jnp.ndarray:
    """Shift of a bin centre towards an attractor at distance dx: dx / (1 + alpha * dx^gamma)."""
    return dx / (1 + ATTRACTOR_ALPHA * dx**ATTRACTOR_GAMMA)


def attractor_shift(attractors: jnp.ndarray, bins: jnp.ndarray) -> jnp.ndarray:
    """The summed pull of every attractor on every bin: `[..., n_attractors]`, `[..., n_bins]` -> `[..., n_bins]`.
    One `[..., n_bins]` term per attractor (no `[..., n_attractors, n_bins]` tensor)."""
    return sum_in_order([inverse_attractor(attractors[..., i, None] - bins) for i in range(attractors.shape[-1])])


def sort_last_axis(x: jnp.ndarray) -> jnp.ndarray:
    """`jnp.sort(x, axis=-1)` (for values without NaN), as a bitonic sorting network when the axis is a power of 2.

    XLA:CPU's sort runs as a slow library call per pixel; the network is 21 rounds of elementwise min/max over the
    pixel's bins, which fuse (the timings: benchmarks/HISTORY.md). The result is the same multiset in ascending
    order, so it equals the library sort exactly.
    """
    n = x.shape[-1]
    if n & (n - 1):
        return jnp.sort(x, axis=-1)
    lead = x.shape[:-1]
    size = 2
    while size <= n:  # merge ascending/descending runs of size/2 into runs of `size`, alternating direction
        half = size // 2
        while half >= 1:  # compare-exchange the elements `half` apart inside each run
            pairs = x.reshape(*lead, n // (2 * half), 2, half)
            low, high = jnp.minimum(pairs[..., 0, :], pairs[..., 1, :]), jnp.maximum(pairs[..., 0, :], pairs[..., 1, :])
            # Element i of a run of `size` sorts ascending when bit `size` of i is 0 (the last round: always).
            block = np.arange(n // (2 * half)) * 2 * half
            ascending = jnp.asarray(((block & size) == 0)[:, None])
            first, second = jnp.where(ascending, low, high), jnp.where(ascending, high, low)
            x = jnp.stack([first, second], axis=-2).reshape(*lead, n)
            half //= 2
        size *= 2
    return x


def sum_last_axis_in_order(x: jnp.ndarray) -> jnp.ndarray:
    """`x [..., K]` summed over its last axis with `sum_in_order`, first element first: `[..., 1]`.

    Its gradient is the upstream gradient repeated K times. Autodiff would transpose each of the K one-element
    slices into a zero map of x's shape and add the K maps: K times the work of the sum itself
    (benchmarks/HISTORY.md)."""
    return _sum_last_axis_in_order(x, x.shape[-1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _sum_last_axis_in_order(x, size):
    return sum_in_order([x[..., i : i + 1] for i in range(size)])


def _sum_last_axis_in_order_forward(x, size):
    return _sum_last_axis_in_order(x, size), None


def _sum_last_axis_in_order_backward(size, _, gradient):  # gradient [..., 1]
    return (jnp.repeat(gradient, size, axis=-1),)


_sum_last_axis_in_order.defvjp(_sum_last_axis_in_order_forward, _sum_last_axis_in_order_backward)


def in_row_tiles(fn, *maps, rows: int = TILE_ROWS):
    """`fn(*maps)` for a per-pixel `fn`, computed a band of image rows at a time in a loop (with the CPU forms,
    `layers.cpu_forms`; otherwise in one piece).

    `maps` are NHWC of one B, H, W; `fn` takes tiles `[B, rows', W, C_i]` and returns `[B, rows', W, C_out]`; the
    result is `[B, H, W, C_out]`. A step covers `rows' = rows_per_step(rows, B)` rows of every image (about `rows`
    image rows of work); the loop runs over rows, never over images, so a batch sharded over devices stays sharded.
    Why: XLA:CPU fuses a chain of per-pixel operations into the resize (gather) that consumes it, and then writes
    each expensive term of the chain to memory on its own and recomputes the chain per gather tap, bound by memory
    bandwidth (`optimization_barrier` does not prevent it on CPU; benchmarks/HISTORY.md). In a loop body the chain
    is one fusion over a cache-sized tile, and its output a buffer that nothing fuses into.
    """
    if not cpu_forms():  # GPU / TPU: one fusion over the whole maps
        return fn(*maps)
    batch, height, width = maps[0].shape[:3]
    rows = rows_per_step(rows, batch)
    tiles = -(-height // rows)
    pad = tiles * rows - height

    def as_tiles(m):  # [B, H, W, C] -> [tiles, B, rows, W, C]
        if pad:  # (an edge pad of nothing is not free: its gradient is a full-size copy per map)
            m = jnp.pad(m, ((0, 0), (0, pad), (0, 0), (0, 0)), mode="edge")
        return m.reshape(batch, tiles, rows, width, -1).swapaxes(0, 1)

    out = jax.lax.map(lambda ts: fn(*ts), [as_tiles(m) for m in maps])  # [tiles, B, rows, W, C_out]
    return out.swapaxes(0, 1).reshape(batch, tiles * rows, width, -1)[:, :height]


def resize_to(x: jnp.ndarray, like: jnp.ndarray) -> jnp.ndarray:
    """Bilinear (align_corners=True) resize of NHWC `x` to the spatial size of `like`."""
    return resize_bilinear(x, like.shape[1:3], align_corners=True)


class SeedBinRegressor(nn.Module):
    """Per-pixel MLP predicting the first bin centres. "normed": centres from normalised widths on
    [min_depth, max_depth]; "softplus": unbounded centres. Returns (bins for the attractors, metric centres)."""

    n_bins: int
    mlp_dim: int
    min_depth: float
    max_depth: float
    normed: bool

    @nn.compact
    def __call__(self, x):  # [B, h, w, C] -> ([B, h, w, n_bins], [B, h, w, n_bins])
        x = nn.relu(conv(self.mlp_dim, 1, "conv1", jnp.float32)(x))
        x = conv(self.n_bins, 1, "conv2", jnp.float32)(x)
        if not self.normed:
            centers = nn.softplus(x)
            return centers, centers
        widths = nn.relu(x) + 1e-3
        widths = widths / widths.sum(axis=-1, keepdims=True)
        scaled = (self.max_depth - self.min_depth) * widths
        scaled = jnp.concatenate([jnp.full_like(scaled[..., :1], self.min_depth), scaled], axis=-1)
        edges = jnp.cumsum(scaled, axis=-1)
        centers = 0.5 * (edges[..., :-1] + edges[..., 1:])
        # Normalised back to [0, 1] for the attractors, as the heads of transformers do.
        return (centers - self.min_depth) / (self.max_depth - self.min_depth), centers


class Projector(nn.Module):
    """conv1x1 -> ReLU -> conv1x1: features to bin embeddings."""

    features: int
    mlp_dim: int

    @nn.compact
    def __call__(self, x):
        x = nn.relu(conv(self.mlp_dim, 1, "conv1", jnp.float32)(x))
        return conv(self.features, 1, "conv2", jnp.float32)(x)


class AttractorLayer(nn.Module):
    """Moves the previous bin centres towards attractor points predicted from the bin embedding.

    normed=True (bins on [0, 1], `ZoeDepthAttractorLayer`): returns (new normed bins, metric centres sorted and
    clipped to the depth range). normed=False (`ZoeDepthAttractorLayerUnnormed`): returns the unbounded centres twice.
    """

    n_attractors: int
    min_depth: float
    max_depth: float
    normed: bool
    kind: str  # "mean" or "sum" over the attractors

    @nn.compact
    def __call__(self, embedding, prev_bins, prev_embedding):
        # embedding [B, h, w, E]; prev_bins [B, h', w', n_bins]; prev_embedding [B, h', w', E]
        x = embedding + resize_to(prev_embedding, embedding)
        x = nn.relu(conv(embedding.shape[-1], 1, "conv1", jnp.float32)(x))
        if self.normed:
            x = nn.relu(conv(2 * self.n_attractors, 1, "conv2", jnp.float32)(x)) + 1e-3
            # Quirk kept for the released weights: the original normalised each attractor pair and then
            # overwrote the result with the pair's first entry. Channels are (attractor, pair) interleaved.
            attractors = x[..., 0::2]
        else:
            attractors = nn.softplus(conv(self.n_attractors, 1, "conv2", jnp.float32)(x))
        bins = resize_to(prev_bins, embedding)  # [B, h, w, n_bins]
        n_bins = bins.shape[-1]

        def move(attractors, bins):  # one tile -> new bins, and for normed bins the metric centres after them
            shift = attractor_shift(attractors, bins)
            new_bins = bins + (shift / self.n_attractors if self.kind == "mean" else shift)
            if not self.normed:
                return new_bins
            centers = (self.max_depth - self.min_depth) * new_bins + self.min_depth
            centers = jnp.clip(sort_last_axis(centers), self.min_depth, self.max_depth)
            return jnp.concatenate([new_bins, centers], axis=-1)

        moved = in_row_tiles(move, attractors, bins)
        if not self.normed:
            return moved, moved
        return moved[..., :n_bins], moved[..., n_bins:]


class Conv1x1Weights(nn.Module):
    """The parameters of a 1x1 convolution, named as `nn.Conv` names them (`kernel [1, 1, in, out]`, `bias [out]`),
    returned as a matrix `[in, out]` and a vector: for layers computed inside `in_row_tiles`, where Flax modules
    cannot be called."""

    in_features: int
    features: int

    @nn.compact
    def __call__(self):
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (1, 1, self.in_features, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        return kernel[0, 0], bias


def log_binomial_coefficients(n_classes: int, eps: float = 1e-7) -> np.ndarray:
    """log C(K-1, k) for k = 0..K-1 by Stirling's approximation, with transformers' epsilons, in float32.

    A constant of the shape, computed here in numpy as torch computes it: left to XLA, the k = K-1 term
    0 * log(0 + eps) can be rewritten into 0 * log(0) = NaN under jit.
    """
    n = np.float32(n_classes - 1) + np.float32(eps)
    k = np.arange(n_classes, dtype=np.float32) + np.float32(eps)
    with np.errstate(divide="ignore"):
        return (n * np.log(n) - k * np.log(k) - (n - k) * np.log(n - k + np.float32(eps))).astype(np.float32)


class ConditionalLogBinomial(nn.Module):
    """The depth of each pixel: the bin centres averaged under a distribution over the `n_classes` bins.

    A per-pixel MLP gives a probability p and a temperature t; the distribution is the softmax over the bins of
    the log-binomial log C(K-1, k) + k log p + (K-1-k) log(1-p), divided by t. (transformers' module returns the
    distribution and its head takes the average; here both happen per tile of rows, see below.)

    The MLP's first layer is a 1x1 convolution of `main` concatenated with the condition resized to `main`'s size.
    A 1x1 convolution commutes with a bilinear resize (both are linear, one over channels, one over pixels), so
    the condition's share is projected at its own resolution and then resized: the same function, without the
    full-resolution concatenation (at 384x512: 160 channels in, 40 out) in memory. Rounding differs from the
    concatenated form in the last bits only. Everything after that is per pixel and runs in `in_row_tiles`: the
    `[B, H, W, n_classes]` logits, exponentials and weighted centres stay in cache, a tile at a time.
    """

    n_classes: int
    bottleneck: int
    min_temp: float
    max_temp: float
    with_std: bool = False  # also the standard deviation of depth under the distribution (a separate program)

    @nn.compact
    def __call__(self, main, condition, centers):
        # main [B, H, W, C1]; condition [B, h, w, C2]; centers [B, h', w', n_classes]
        # -> depth [B, H, W], or (depth, std) [B, H, W] each with `with_std`
        split = main.shape[-1]
        first_kernel, first_bias = Conv1x1Weights(split + condition.shape[-1], self.bottleneck, name="mlp_0")()
        second_kernel, second_bias = Conv1x1Weights(self.bottleneck, 4, name="mlp_2")()
        condition_part = resize_to(jnp.einsum("bhwc,cf->bhwf", condition, first_kernel[split:]), main)
        centers = resize_to(centers, main)
        eps = 1e-4
        k = jnp.arange(self.n_classes, dtype=jnp.float32)
        last = jnp.asarray(self.n_classes - 1, jnp.float32)
        coefficients = log_binomial_coefficients(self.n_classes)

        def depth(main, condition_part, centers):  # one tile: [..., C1], [..., bottleneck], [..., K] -> [..., 1]
            x = jnp.einsum("...c,cf->...f", main, first_kernel[:split]) + condition_part + first_bias
            x = jnp.einsum("...c,cf->...f", gelu(x), second_kernel) + second_bias
            x = nn.softplus(x) + eps
            p = x[..., 0:1] / (x[..., 0:1] + x[..., 1:2])
            t = x[..., 2:3] / (x[..., 2:3] + x[..., 3:4])
            t = (self.max_temp - self.min_temp) * t + self.min_temp
            one_minus_p = jnp.clip(1 - p, eps, 1.0)
            p = jnp.clip(p, eps, 1.0)
            logits = coefficients + k * jnp.log(p) + (last - k) * jnp.log(one_minus_p)
            probabilities = jax.nn.softmax(logits / t, axis=-1)
            mean = sum_last_axis_in_order(probabilities * centers)
            if not self.with_std:
                return mean
            # Var = sum p (c - mean)^2: the centred form, which does not cancel as E[c^2] - mean^2 would.
            variance = sum_last_axis_in_order(probabilities * jnp.square(centers - mean))
            return jnp.concatenate([mean, jnp.sqrt(variance)], axis=-1)

        result = in_row_tiles(depth, main, condition_part, centers)
        if not self.with_std:
            return result[..., 0]
        return result[..., 0], result[..., 1]
