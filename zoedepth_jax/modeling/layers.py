"""Small building blocks shared by the model files.

Parameter names follow the Hugging Face module tree: a PyTorch module `a.b.3.c` is the Flax path
`a/b_3/c`, so wrappers exist only where transformers nests a module (`intermediate.dense`, `mlp.0`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from zoedepth_jax.errors import ArgumentError

Dtype = jnp.dtype


# Which forms of the model's hot spots are traced. "cpu": loops over row bands and query chunks (a cache-sized
# working set per step) and convolutions as matmuls, each faster on XLA:CPU (see the classes and
# functions that use it). "plain": whole-tensor attention, convolutions and per-pixel chains, for GPUs and TPUs,
# where those loops would cut one device kernel into many small sequential ones. By default "cpu" exactly when
# JAX's default backend is the CPU; `traced_forms` overrides that while a function is traced, in its own thread
# only (tracing happens in the calling thread, and another thread may be tracing for another platform).
FORMS = ("cpu", "plain")
_overrides = threading.local()


def _override_stack() -> list[str]:
    if not hasattr(_overrides, "stack"):
        _overrides.stack = []
    return _overrides.stack


def cpu_forms() -> bool:
    """True when the CPU-tuned forms are to be traced (see `FORMS`)."""
    stack = _override_stack()
    if stack:
        return stack[-1] == "cpu"
    return jax.default_backend() == "cpu"


def current_forms() -> str:
    """The forms a function traced now would take: "cpu" or "plain" (see `cpu_forms`)."""
    return "cpu" if cpu_forms() else "plain"


@contextlib.contextmanager
def traced_forms(kind: str) -> Iterator[None]:
    """Traces the model's "cpu" or "plain" forms inside the block, whatever the default backend (for an export to
    another platform, or a test comparing the two). Both compute the same function."""
    if kind not in FORMS:
        raise ArgumentError(f"forms must be one of {FORMS}, got {kind!r}")
    stack = _override_stack()
    stack.append(kind)
    try:
        yield
    finally:
        stack.pop()


def residual_stream_boundary(hidden: jax.Array) -> jax.Array:
    """`hidden` (a transformer layer's output [B, N, D]), through an identity whose gradient XLA:CPU stores.

    The gradient of a residual stream is a chain of additions, one per layer, down the stack. XLA:CPU fuses
    elementwise producers into each of their consumers, so unless something stops it, every layer's backward
    recomputes the whole chain from the last layer down instead of reading it: work quadratic in the depth, the
    larger part of a ViT-L backward pass. Under the CPU forms the gradient leaves through a loop (`_stored`),
    whose carried value XLA must keep in a buffer; elsewhere, and in the forward pass, this is the identity.
    """
    return _stored_gradient(hidden) if cpu_forms() else hidden


@jax.custom_vjp
def _stored_gradient(x: jax.Array) -> jax.Array:
    return x


def _stored_gradient_forward(x: jax.Array):
    return x, None


def _stored_gradient_backward(_, gradient: jax.Array):
    return (_stored(gradient),)


_stored_gradient.defvjp(_stored_gradient_forward, _stored_gradient_backward)


def _stored(x: jax.Array) -> jax.Array:
    """`x`, computed as the carried value of a while loop that runs once (twice when x's first element is NaN):
    XLA keeps loop-carried values in buffers, and cannot remove a loop whose trip count depends on the data. Each
    pass is the identity."""

    def one_pass(carry):
        done, value = carry
        return done + 1, jnp.where(done < 0, -value, value)  # never negated: `done` counts up from 0

    return jax.lax.while_loop(_runs_once_on(x), one_pass, (jnp.int32(0), x))[1]


def _transposed(rows: jax.Array) -> jax.Array:
    """`rows [R, K]` transposed, `[K, R]`, laid out in a buffer of its own under the CPU forms: computed inside a
    loop that runs once (as in `_stored`), where XLA cannot fold it into the dot that reads it. Folded, the dot
    contracts its left operand's leading axis, which XLA:CPU runs off its bf16 kernels, on operands converted to
    fp32 (benchmarks/HISTORY.md); laid out, rows^T g is an ordinary bf16 matmul."""
    if not cpu_forms():
        return rows.T

    def one_pass(carry):
        done, _ = carry
        return done + 1, jnp.where(done < 0, -rows, rows).T  # never negated: `done` counts up from 0

    empty = jnp.zeros(rows.shape[::-1], rows.dtype)
    return jax.lax.while_loop(_runs_once_on(rows), one_pass, (jnp.int32(0), empty))[1]


def _runs_once_on(x: jax.Array):
    """A while loop's condition on `(passes done, value)`: one pass, two when x's first element is NaN, so that
    the trip count depends on the data."""
    first = x.reshape(-1)[0]
    trips = 1 + (first != first).astype(jnp.int32)
    return lambda carry: carry[0] < trips


def dot_in_f32(lhs, rhs, dimension_numbers):
    """`lax.dot_general` accumulating in fp32 and returning fp32.

    For fp32 inputs this is the plain dot. For bf16 it is the form XLA:CPU runs on its bf16 dot kernels
    (avx512_bf16, AMX; bf16 inputs, fp32 result); a bf16 -> bf16 dot runs there in fp32 with conversions, much
    slower (benchmarks/HISTORY.md). On GPU/TPU it is what the matrix units do anyway.
    """
    return jax.lax.dot_general(lhs, rhs, dimension_numbers, preferred_element_type=jnp.float32)


def matmul_in_f32(x: jax.Array, weight: jax.Array) -> jax.Array:
    """`x [..., K]` times `weight [K, N]`, accumulating in fp32 and returning fp32 (`dot_in_f32`).

    For bf16 inputs the gradients are bf16 matmuls with fp32 accumulation as well (`_bf16_matmul`): autodiff would
    multiply the fp32 cotangent with a bf16 operand, a mixed dot that XLA:CPU runs in fp32, off the bf16 kernels.
    """
    if x.dtype == weight.dtype == jnp.bfloat16:
        return _bf16_matmul(x, weight)
    return dot_in_f32(x, weight, (((x.ndim - 1,), (0,)), ((), ())))


@jax.custom_vjp
def _bf16_matmul(x: jax.Array, weight: jax.Array) -> jax.Array:
    return dot_in_f32(x, weight, (((x.ndim - 1,), (0,)), ((), ())))


def _bf16_matmul_forward(x, weight):
    return _bf16_matmul(x, weight), (x, weight)


def _bf16_matmul_backward(saved, cotangent):
    """The cotangent is rounded to bf16 first. That is exact where the fp32 result is rounded to bf16 (plus a bias)
    before any other use, as in every layer here: its cotangent is then a bf16 value carried in fp32."""
    x, weight = saved
    cotangent = cotangent.astype(x.dtype)  # [..., N]
    d_x = dot_in_f32(cotangent, weight, (((cotangent.ndim - 1,), (1,)), ((), ())))
    rows = (-1, x.shape[-1]), (-1, cotangent.shape[-1])
    x_transposed = _transposed(x.reshape(rows[0]))  # [K, R]
    d_weight = dot_in_f32(x_transposed, cotangent.reshape(rows[1]), (((1,), (0,)), ((), ())))
    return d_x.astype(x.dtype), d_weight.astype(weight.dtype)


_bf16_matmul.defvjp(_bf16_matmul_forward, _bf16_matmul_backward)


def sum_in_order(terms) -> jax.Array:
    """The sum of `terms` (arrays of one shape) as a chain of adds, first term first.

    For sums over a short axis: a channel axis (bins, attractors) or the batch axis. XLA:CPU runs such a reduction
    (`jnp.sum(a * b, axis=-1)` over 64 bins, `jnp.sum(x, axis=0)` over a batch of 2) as a slow library reduce
    fusion, while the chain fuses into one elementwise loop (benchmarks/HISTORY.md). It also adds in torch's order
    for a reduction over the channels of an NCHW tensor.
    """
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def optional_bias(module: nn.Module, features: int, use_bias: bool) -> jax.Array | None:
    """The module's `bias [features]` parameter (`nn.Dense`'s and `nn.Conv`'s name and initialiser), or None."""
    return module.param("bias", nn.initializers.zeros, (features,)) if use_bias else None


def add_bias_and_round(y: jax.Array, bias: jax.Array | None, dtype: Dtype) -> jax.Array:
    """Finishes a matmul-form layer: its fp32 result `y [..., features]` plus `bias` in fp32, rounded once to
    `dtype`. torch adds a bf16 layer's bias in the fp32 accumulator of its matmul or convolution (autocast's addmm),
    so rounding before the bias add would round twice."""
    return (y if bias is None else y + bias).astype(dtype)


def gelu(x: jax.Array) -> jax.Array:
    """Exact GELU as torch computes it, x/2 (1 + erf(x / sqrt(2))), in fp32 and rounded once to `x`'s dtype.

    `nn.gelu(approximate=False)` uses erfc, which XLA expands into two branches with an exponential and
    divisions, and in bf16 rounds every intermediate; torch's bf16 GELU computes in fp32 and rounds once. This
    form is also the faster one on XLA:CPU in both dtypes (benchmarks/HISTORY.md).
    """
    x32 = x.astype(jnp.float32)
    return (0.5 * x32 * (1.0 + jax.lax.erf(x32 * np.float32(np.sqrt(0.5))))).astype(x.dtype)


def project_channels(module: nn.Module, x: jax.Array, kernel: jax.Array) -> jax.Array:
    """`x [..., in]` times `kernel [in, features]` in `module.dtype` with fp32 accumulation, plus the module's
    optional bias, rounded once: the body of `Dense` and `Conv1x1` (`module.features`, `use_bias`, `dtype`)."""
    y = matmul_in_f32(x.astype(module.dtype), kernel.astype(module.dtype))
    return add_bias_and_round(y, optional_bias(module, module.features, module.use_bias), module.dtype)


class Dense(nn.Module):
    """A linear layer with `nn.Dense`'s parameters (`kernel [in, out]`, `bias [out]`) and initialisers, computing
    in `dtype` with fp32 accumulation (`dot_in_f32`) and the bias added before rounding (`add_bias_and_round`)."""

    features: int
    dtype: Dtype = jnp.float32
    use_bias: bool = True

    @nn.compact
    def __call__(self, x):  # [..., in] -> [..., features]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.features))
        return project_channels(self, x, kernel)


def dense(features: int, dtype: Dtype, name: str, use_bias: bool = True) -> Dense:
    """A linear layer computing in `dtype` with fp32 accumulation (see `Dense`)."""
    return Dense(features, dtype, use_bias, name=name)


def conv(features: int, kernel: int, name: str, dtype: Dtype, stride: int = 1, padding: int = 0, bias: bool = True):
    """A 2-D convolution with torch's explicit symmetric zero padding (Flax's 'SAME' pads differently for stride 2).
    A 1x1 convolution (stride 1, no padding) is a `Conv1x1`; with the CPU forms (`cpu_forms`), a 3x3 one (stride 1,
    padding 1) is a `Conv3x3InRowTiles` when wide and bf16, else a `Conv3x3`, and a strided one a
    `StridedConvAsMatmul`."""
    if kernel == 1 and stride == 1 and padding == 0:
        return Conv1x1(features, dtype, use_bias=bias, name=name)
    tuned = cpu_forms()
    wide_bf16 = dtype == jnp.bfloat16 and features >= ROW_TILED_CONV_MIN_FEATURES
    if tuned and (kernel, stride, padding) == (3, 1, 1) and wide_bf16:
        return Conv3x3InRowTiles(features, dtype, use_bias=bias, name=name)
    if tuned and stride > 1:
        return StridedConvAsMatmul(features, kernel, stride, padding, dtype, use_bias=bias, name=name)
    if tuned and (kernel, stride, padding) == (3, 1, 1):
        return Conv3x3(features, dtype, use_bias=bias, name=name)
    return nn.Conv(
        features,
        kernel_size=(kernel, kernel),
        strides=(stride, stride),
        padding=((padding, padding), (padding, padding)),
        use_bias=bias,
        dtype=dtype,
        name=name,
    )


class Conv3x3(nn.Module):
    """A 3x3 convolution, stride 1, zero padding 1: `nn.Conv`'s parameters, initialisers and forward computation
    (XLA's convolution, the same numbers), with the kernel's gradient computed as matmuls over bands of rows
    (`conv3x3`).

    XLA:CPU computes a convolution's kernel gradient as another convolution, at a fraction of its matmul rate (the
    neck's and relative head's 3x3 convolutions: benchmarks/HISTORY.md); their input gradient it computes well.
    """

    features: int
    dtype: Dtype = jnp.float32
    use_bias: bool = True

    @nn.compact
    def __call__(self, x):  # [B, H, W, C_in] -> [B, H, W, features]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (3, 3, x.shape[-1], self.features))
        bias = optional_bias(self, self.features, self.use_bias)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = conv3x3(x, kernel)
        return y if bias is None else y + bias


@jax.custom_vjp
def conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """`x [B, H, W, C_in]` convolved with `kernel [3, 3, C_in, C_out]` (stride 1, zero padding 1), as `nn.Conv`
    computes it; the kernel's gradient is a sum of matmuls over bands of rows (`_kernel_gradient_in_row_tiles`)."""
    return _convolve(x, kernel)


def _convolve(x, kernel):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _conv3x3_forward(x, kernel):
    return _convolve(x, kernel), (x, kernel)


def _conv3x3_backward(saved, gradient):
    x, kernel = saved
    (input_gradient,) = jax.vjp(lambda x: _convolve(x, kernel), x)[1](gradient)
    return input_gradient, _kernel_gradient_in_row_tiles(x, gradient).astype(kernel.dtype)


conv3x3.defvjp(_conv3x3_forward, _conv3x3_backward)


class Conv1x1(nn.Module):
    """A 1x1 convolution computed as a matmul over the channel axis, with `nn.Conv`'s parameters
    (`kernel [1, 1, in, out]`, `bias [out]`) and initialisers.

    XLA:CPU runs a 1x1 `conv_general_dilated` well below its dot rate at the neck's and heads' sizes
    (benchmarks/HISTORY.md), and in bf16 the dot takes the bf16 path (`dot_in_f32`) where a convolution is
    converted to fp32.
    """

    features: int
    dtype: Dtype = jnp.float32
    use_bias: bool = True

    @nn.compact
    def __call__(self, x):  # [..., C_in] -> [..., features]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (1, 1, x.shape[-1], self.features))
        return project_channels(self, x, kernel.astype(self.dtype)[0, 0])  # converted first: see weights/dtypes.py


class StridedConvAsMatmul(nn.Module):
    """A k x k convolution with stride > 1 and symmetric zero padding, computed as one matmul over the k*k strided
    taps of the input laid side by side on the channel axis (im2col), with `nn.Conv`'s parameters and initialisers
    (`kernel [k, k, in, out]`, `bias [out]`).

    XLA:CPU runs strided convolutions far below its dot rate, and in bf16 converts them (and their kernel, on
    every call) to fp32; this form runs at the dot's rate (the neck's 3x3 stride-2 1024 -> 1024 convolution:
    benchmarks/HISTORY.md). Strided outputs are few, so the taps (`[B, H/s, W/s, k*k*C_in]`) are small.
    """

    features: int
    kernel_size: int
    stride: int
    padding: int
    dtype: Dtype = jnp.float32
    use_bias: bool = True

    @nn.compact
    def __call__(self, x):  # [B, H, W, C_in] -> [B, H_out, W_out, features]
        k, s, p = self.kernel_size, self.stride, self.padding
        channels = x.shape[-1]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, channels, self.features))
        padded = jnp.pad(x.astype(self.dtype), ((0, 0), (p, p), (p, p), (0, 0)))
        out_height = (padded.shape[1] - k) // s + 1
        out_width = (padded.shape[2] - k) // s + 1
        taps = [
            padded[:, dy : dy + s * (out_height - 1) + 1 : s, dx : dx + s * (out_width - 1) + 1 : s]
            for dy in range(k)
            for dx in range(k)
        ]  # k*k x [B, H_out, W_out, C_in], in the kernel's (dy, dx, c_in) order
        y = matmul_in_f32(jnp.concatenate(taps, axis=-1), kernel.astype(self.dtype).reshape(k * k * channels, -1))
        return add_bias_and_round(y, optional_bias(self, self.features, self.use_bias), self.dtype)


# Output channels from which `Conv3x3InRowTiles` beats XLA:CPU's bf16 convolution: wide ones gain, the relative
# head's 128 -> 32 loses (benchmarks/HISTORY.md).
ROW_TILED_CONV_MIN_FEATURES = 128
# Image rows per step of the loops over row bands (`Conv3x3InRowTiles`, `metric_bins.in_row_tiles`): enough work
# per step to amortise the loop, a working set that stays in cache (2, 4, 8 and 16 were compared; 8 was best or
# close to it at every shape). At batch B a step covers max(1, TILE_ROWS // B) rows of every image.
TILE_ROWS = 8


def rows_per_step(rows: int, batch) -> int:
    """Rows of every image that one step of a loop over row bands covers, for about `rows` image rows of work:
    max(1, rows // batch), or 1 when the batch size is symbolic (`jax.export` with a symbolic batch)."""
    return max(1, rows // batch) if isinstance(batch, int) else 1


class Conv3x3InRowTiles(nn.Module):
    """A 3x3 convolution, stride 1, zero padding 1, computed a band of output rows (of every image) at a time
    (`conv3x3_in_row_tiles`). Parameters and initialisers are `nn.Conv`'s (`kernel [3, 3, in, out]`, `bias [out]`).

    For bf16: XLA:CPU has no bf16 convolution (it converts to fp32 and runs the fp32 one), while a bf16 matmul with
    fp32 accumulation runs faster than fp32 on avx512_bf16 / AMX. Whole-image forms of the same matmuls
    (9 shifted products, im2col) were slower than the fp32 convolution: the shifted copies and the partial sums
    went through memory. A band's copies (`[B, rows + 2, W, 3 * C_in]`) stay in cache.
    """

    features: int
    dtype: Dtype = jnp.bfloat16
    use_bias: bool = True

    @nn.compact
    def __call__(self, x):  # [B, H, W, C_in] -> [B, H, W, features]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (3, 3, x.shape[-1], self.features))
        bias = optional_bias(self, self.features, self.use_bias)
        return conv3x3_in_row_tiles(x.astype(self.dtype), kernel.astype(self.dtype), bias)


@jax.custom_vjp
def conv3x3_in_row_tiles(x: jax.Array, kernel: jax.Array, bias: jax.Array | None) -> jax.Array:
    """`x [B, H, W, C_in]` convolved with `kernel [3, 3, C_in, C_out]` (stride 1, zero padding 1) plus `bias`,
    rounded once to x's dtype: in a loop over bands of output rows, each three matmuls (one per kernel row) over
    the three column shifts of the band's input rows, accumulating in fp32. The loop runs over rows, never over
    images, so a batch sharded over devices stays sharded.

    The backward runs in bands too: the input gradient is the same convolution of the output gradient (kernel
    flipped in space, its channel axes swapped), the kernel gradient a sum over bands. Autodiff of the loop would
    instead add every band's input gradient into a zero map of the whole padded input, one full pass over that
    map per band: work quadratic in the height (benchmarks/HISTORY.md).
    """
    return _convolve_in_row_tiles(x, kernel, bias)


def _convolve_in_row_tiles(x, kernel, bias):
    batch, height, width, _ = x.shape
    rows, tiles, padded = _row_bands(x)
    by_kernel_row = kernel.reshape(3, -1, kernel.shape[-1])  # [3, 3 * C_in, C_out], (dx, c_in) flattened

    def tile(first_row):  # -> [B, rows, W, C_out]
        shifts = _band_shifts(padded, first_row, rows)
        terms = [dot_in_f32(shifts[:, dy : dy + rows], by_kernel_row[dy], (((3,), (0,)), ((), ()))) for dy in range(3)]
        return add_bias_and_round(terms[0] + terms[1] + terms[2], bias, x.dtype)

    y = jax.lax.map(tile, jnp.arange(tiles) * rows)  # [tiles, B, rows, W, C_out]
    return y.swapaxes(0, 1).reshape(batch, tiles * rows, width, -1)[:, :height]


def _row_bands(x: jax.Array) -> tuple[int, int, jax.Array]:
    """(rows of every image per band, bands, x zero-padded by one row and column on each side (the convolution's
    padding) and by rows up to whole bands)."""
    batch, height = x.shape[:2]
    rows = rows_per_step(TILE_ROWS, batch)
    tiles = -(-height // rows)
    return rows, tiles, jnp.pad(x, ((0, 0), (1, 1 + tiles * rows - height), (1, 1), (0, 0)))


def _band_shifts(padded: jax.Array, first_row, rows: int) -> jax.Array:
    """The input rows of the band of output rows from `first_row`, in its three column shifts side by side:
    `[B, rows + 2, W, 3 * C_in]`, channels in the kernel's (dx, c_in) order."""
    width = padded.shape[2] - 2
    band = jax.lax.dynamic_slice_in_dim(padded, first_row, rows + 2, axis=1)  # [B, rows + 2, W + 2, C_in]
    return jnp.concatenate([band[:, :, dx : dx + width] for dx in range(3)], axis=-1)


def _conv3x3_in_row_tiles_forward(x, kernel, bias):
    return _convolve_in_row_tiles(x, kernel, bias), (x, kernel, bias)


def _conv3x3_in_row_tiles_backward(saved, gradient):
    x, kernel, bias = saved
    gradient = gradient.astype(x.dtype)  # [B, H, W, C_out]
    d_x = _convolve_in_row_tiles(gradient, kernel[::-1, ::-1].swapaxes(2, 3), None)
    d_bias = None if bias is None else jnp.sum(gradient.astype(jnp.float32), axis=(0, 1, 2)).astype(bias.dtype)
    return d_x, _kernel_gradient_in_row_tiles(x, gradient).astype(kernel.dtype), d_bias


def _kernel_gradient_in_row_tiles(x: jax.Array, gradient: jax.Array) -> jax.Array:
    """d loss / d kernel [3, 3, C_in, C_out] in fp32, a sum over the bands of `_convolve_in_row_tiles`: per band
    and kernel row dy, g^T (the band's output gradient, laid out transposed: `_transposed`) times the band's
    column shifts from row dy."""
    channels, features = x.shape[-1], gradient.shape[-1]
    rows, tiles, padded = _row_bands(x)
    gradient = jnp.pad(gradient, ((0, 0), (0, tiles * rows - x.shape[1]), (0, 0), (0, 0)))  # zero rows: no terms

    def add_band(total, first_row):  # total [3, C_out, 3 * C_in]
        shifts = _band_shifts(padded, first_row, rows)
        band_gradient = jax.lax.dynamic_slice_in_dim(gradient, first_row, rows, axis=1).reshape(-1, features)
        transposed = _transposed(band_gradient)  # [C_out, B * rows * W]
        terms = [
            dot_in_f32(transposed, shifts[:, dy : dy + rows].reshape(-1, 3 * channels), (((1,), (0,)), ((), ())))
            for dy in range(3)
        ]
        return total + jnp.stack(terms), None

    total, _ = jax.lax.scan(add_band, jnp.zeros((3, features, 3 * channels), jnp.float32), jnp.arange(tiles) * rows)
    return total.swapaxes(1, 2).reshape(3, 3, channels, features)


conv3x3_in_row_tiles.defvjp(_conv3x3_in_row_tiles_forward, _conv3x3_in_row_tiles_backward)


def layer_norm(epsilon: float, name: str) -> nn.LayerNorm:
    """LayerNorm computed in fp32 with torch's two-pass variance (Flax's default E[x^2]-E[x]^2 loses digits
    when the mean is large, as it is in BEiT's residual stream). Callers cast the result back."""
    return nn.LayerNorm(epsilon=epsilon, use_fast_variance=False, dtype=jnp.float32, name=name)


class DenseBlock(nn.Module):
    """A module holding one linear layer called `dense` (transformers' `intermediate`, `output`, ...)."""

    features: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        return dense(self.features, self.dtype, "dense")(x)


class UpsampleConvTranspose(nn.Module):
    """torch `ConvTranspose2d(c, c, kernel_size=k, stride=k)`: each input pixel paints its own k x k block.

    The blocks do not overlap, so the layer is one matmul followed by a depth-to-space reshape, which XLA runs
    far faster than a general transposed convolution. `kernel` is `[k, k, in, out]`: torch's `[in, out, k, k]`
    permuted (2, 3, 0, 1), with no spatial flip because no two taps meet.
    """

    features: int
    factor: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):  # x: [B, H, W, C_in] -> [B, H*k, W*k, C_out]
        k = self.factor
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, x.shape[-1], self.features))
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        batch, height, width, _ = x.shape
        y = jnp.einsum("bhwi,pqio->bhpwqo", x, kernel, preferred_element_type=jnp.float32)  # [B, H, k, W, k, C_out]
        bias = optional_bias(self, self.features, use_bias=True)
        return add_bias_and_round(y.reshape(batch, height * k, width * k, self.features), bias, self.dtype)
