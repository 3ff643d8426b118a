"""Pieces of the model computed another way than the obvious library call (for speed): same function."""

from __future__ import annotations

import functools
import re
import threading

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tolerances import ATTENTION_GRADIENT_BF16_RELATIVE, LAYER_BF16_RELATIVE, LAYER_FP32_RELATIVE, relative_error

from zoedepth_jax.config import TINY_BACKBONE, TINY_DINOV2, BeitConfig, Dinov2Config
from zoedepth_jax.modeling import beit, dinov2
from zoedepth_jax.modeling.beit import BeitBackbone, attention_with_relative_bias, relative_position_index
from zoedepth_jax.modeling.dinov2 import Dinov2Model
from zoedepth_jax.modeling.layers import (
    Conv1x1,
    Conv3x3,
    Conv3x3InRowTiles,
    Dense,
    StridedConvAsMatmul,
    UpsampleConvTranspose,
    conv,
    cpu_forms,
    gelu,
    matmul_in_f32,
    residual_stream_boundary,
    sum_in_order,
    traced_forms,
)
from zoedepth_jax.modeling.metric_bins import in_row_tiles, sort_last_axis, sum_last_axis_in_order


def _random(shape, seed, dtype=jnp.float32):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


def _as_flax_conv(module, kernel_size, padding, x, stride=1):
    """The same module's parameters, re-drawn at a scale that gives O(1) outputs, and `nn.Conv` with them."""
    params = module.init(jax.random.key(0), x)["params"]
    assert params["kernel"].shape == (kernel_size, kernel_size, x.shape[-1], module.features)
    fan_in = kernel_size * kernel_size * x.shape[-1]
    params = {"kernel": _random(params["kernel"].shape, 1) / np.sqrt(fan_in), "bias": _random(params["bias"].shape, 2)}
    flax_conv = nn.Conv(module.features, (kernel_size, kernel_size), strides=stride, padding=((padding, padding),) * 2)
    return params, flax_conv


def test_conv1x1_is_nn_conv():
    x = _random((2, 7, 5, 48), seed=3)
    module = Conv1x1(96)
    params, flax_conv = _as_flax_conv(module, 1, 0, x)
    ours = module.apply({"params": params}, x)
    reference = flax_conv.apply({"params": params}, x)
    assert float(jnp.std(reference)) > 0.5  # not degenerate
    assert relative_error(ours, reference) <= LAYER_FP32_RELATIVE


def test_dense_is_nn_dense_in_fp32():
    x = _random((2, 7, 48), seed=20)
    params = {"kernel": _random((48, 96), 21) / np.sqrt(48), "bias": _random((96,), 22)}
    ours = Dense(96).apply({"params": params}, x)
    reference = nn.Dense(96).apply({"params": params}, x)
    assert float(jnp.std(reference)) > 0.5
    assert relative_error(ours, reference) <= LAYER_FP32_RELATIVE


@pytest.mark.parametrize(
    "layer, shape",
    [
        (Dense(1, jnp.bfloat16), (1, 2)),
        (Conv1x1(1, jnp.bfloat16), (1, 1, 1, 2)),
        (StridedConvAsMatmul(1, 1, 2, 0, jnp.bfloat16), (1, 1, 1, 2)),
        (Conv3x3InRowTiles(1, jnp.bfloat16), (1, 1, 1, 2)),
        (UpsampleConvTranspose(1, 1, jnp.bfloat16), (1, 1, 1, 2)),
    ],
)
def test_bf16_layers_add_the_bias_before_rounding(layer, shape):
    """x = (1, 2^-9) against weights 1: the fp32 product is 1 + 2^-9, which alone rounds to 1 in bf16. With the
    bias 2^-9 + 2^-11 added in fp32 the sum rounds up to 1 + 2^-7 (torch's addmm); rounding first gives 1."""
    x = jnp.asarray(np.array([1.0, 2.0**-9], np.float32).reshape(shape), jnp.bfloat16)
    params = jax.tree.map(jnp.ones_like, layer.init(jax.random.key(0), x)["params"])
    if isinstance(layer, Conv3x3InRowTiles):  # only the centre tap sees the pixel; the others read the padding
        params["kernel"] = jnp.zeros_like(params["kernel"]).at[1, 1].set(1.0)
    params["bias"] = jnp.full_like(params["bias"], 2.0**-9 + 2.0**-11)
    y = layer.apply({"params": params}, x)
    assert y.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(y, np.float32).ravel(), [1 + 2.0**-7])


def test_gelu_is_torchs_exact_gelu():
    torch = pytest.importorskip("torch")
    values = np.random.default_rng(23).standard_normal(100_000).astype(np.float32) * 4
    expected = torch.nn.functional.gelu(torch.from_numpy(values)).numpy()
    # For x << 0, 1 + erf(x) cancels: both sides carry their erf's absolute error (~1e-7) there (measured 1.1e-6
    # at most in the output); the tanh approximation is ~1e-3 away.
    np.testing.assert_allclose(np.asarray(gelu(jnp.asarray(values))), expected, rtol=1e-6, atol=2e-6)
    # bf16: torch computes in fp32 and rounds once, and so do we: equal wherever erf is not cancelling (x > -3;
    # nn.gelu's erfc form, rounded per operation, matched 79% there), one bf16 step apart at most in the tail.
    as_bf16 = torch.from_numpy(values).bfloat16()
    expected = torch.nn.functional.gelu(as_bf16).float().numpy()
    inputs = as_bf16.float().numpy()
    ours = np.asarray(gelu(jnp.asarray(inputs, jnp.bfloat16)), np.float32)
    np.testing.assert_array_equal(ours[inputs > -3], expected[inputs > -3])
    np.testing.assert_allclose(ours, expected, rtol=2.0**-7, atol=2e-5)


@pytest.mark.parametrize("height", [13, 8, 3])  # a partial last tile, exactly one tile, fewer rows than a tile
def test_conv3x3_in_row_tiles_is_nn_conv_in_bf16(height):
    x = _random((2, height, 5, 24), seed=4, dtype=jnp.bfloat16)
    module = Conv3x3InRowTiles(128)
    params, flax_conv = _as_flax_conv(module, 3, 1, x)
    params = jax.tree.map(lambda p: p.astype(jnp.bfloat16).astype(jnp.float32), params)  # exact in bf16
    ours = module.apply({"params": params}, x)
    assert ours.dtype == jnp.bfloat16 and ours.shape == (2, height, 5, 128)
    reference = flax_conv.apply({"params": params}, x.astype(jnp.float32))  # fp32 on the same values
    assert float(jnp.std(reference)) > 0.5
    assert relative_error(ours, reference) <= LAYER_BF16_RELATIVE
    shifted = jnp.roll(reference, 1, axis=2)  # a tap off by one pixel is far outside the bound
    assert relative_error(ours, shifted) > 10 * LAYER_BF16_RELATIVE


# batch 1: bands of 8 rows, a partial last one; batch 2: bands of 4, exactly two; batch 3: fewer rows than a band
@pytest.mark.parametrize("batch, height, use_bias", [(1, 13, True), (2, 8, True), (3, 3, True), (2, 11, False)])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_conv3x3_in_row_tiles_gradients_are_nn_convs(dtype, batch, height, use_bias):
    """The banded backward (input gradient as a convolution of the output gradient, kernel gradient summed over
    bands) gives autodiff's gradients of `nn.Conv` on the same values."""
    x = _random((batch, height, 6, 24), seed=80, dtype=dtype)
    module = Conv3x3InRowTiles(32, dtype, use_bias=use_bias)
    params, flax_conv = _as_flax_conv(Conv3x3InRowTiles(32, dtype), 3, 1, x)
    params = jax.tree.map(lambda p: p.astype(dtype).astype(jnp.float32), params)  # exact in the layer's dtype
    if not use_bias:
        params = {"kernel": params["kernel"]}
        flax_conv = flax_conv.clone(use_bias=False)
    ours, ours_vjp = jax.vjp(lambda p, x: module.apply({"params": p}, x), params, x)
    reference, reference_vjp = jax.vjp(lambda p, x: flax_conv.apply({"params": p}, x), params, x.astype(jnp.float32))
    upstream = _random(reference.shape, seed=81, dtype=dtype)
    ours_params, ours_input = ours_vjp(upstream)
    reference_params, reference_input = reference_vjp(upstream.astype(jnp.float32))
    bound = LAYER_FP32_RELATIVE if dtype == jnp.float32 else LAYER_BF16_RELATIVE
    for name, mine, theirs in [("input", ours_input, reference_input)] + [
        (name, ours_params[name], reference_params[name]) for name in params
    ]:
        assert mine.shape == theirs.shape and float(jnp.std(theirs)) > 0.5, name
        assert relative_error(mine, theirs) <= bound, name


# odd and even sizes: the last output row/column reads the padding or not; 2x2: a single output pixel
@pytest.mark.parametrize("height, width, kernel, stride", [(7, 5, 3, 2), (8, 6, 3, 2), (2, 2, 3, 2), (9, 9, 3, 3)])
def test_strided_conv_as_matmul_is_nn_conv(height, width, kernel, stride):
    x = _random((2, height, width, 24), seed=10)
    module = StridedConvAsMatmul(40, kernel, stride, padding=1)
    params, flax_conv = _as_flax_conv(module, kernel, 1, x, stride=stride)
    ours = module.apply({"params": params}, x)
    reference = flax_conv.apply({"params": params}, x)
    assert ours.shape == reference.shape and float(jnp.std(reference)) > 0.5
    assert relative_error(ours, reference) <= LAYER_FP32_RELATIVE
    transposed = {"kernel": params["kernel"].transpose(1, 0, 2, 3), "bias": params["bias"]}  # taps in (dx, dy) order
    assert relative_error(ours, flax_conv.apply({"params": transposed}, x)) > 0.1


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_conv3x3_is_nn_conv_with_its_gradients(dtype):
    """The same forward numbers as `nn.Conv`; the kernel gradient (matmuls over bands of rows) and the input
    gradient agree."""
    x = _random((2, 7, 9, 24), seed=50)
    module = Conv3x3(16, dtype)
    params, flax_conv = _as_flax_conv(module, 3, 1, x)
    flax_conv = flax_conv.clone(dtype=dtype)
    ours, ours_vjp = jax.vjp(lambda p, x: module.apply({"params": p}, x), params, x)
    reference, reference_vjp = jax.vjp(lambda p, x: flax_conv.apply({"params": p}, x), params, x)
    np.testing.assert_array_equal(np.asarray(ours, np.float32), np.asarray(reference, np.float32))
    upstream = _random(reference.shape, seed=51, dtype=dtype)
    bound = LAYER_FP32_RELATIVE if dtype == jnp.float32 else LAYER_BF16_RELATIVE
    ours_gradients, reference_gradients = ours_vjp(upstream), reference_vjp(upstream)
    for name, mine, theirs in [
        ("kernel", ours_gradients[0]["kernel"], reference_gradients[0]["kernel"]),
        ("bias", ours_gradients[0]["bias"], reference_gradients[0]["bias"]),
        ("input", ours_gradients[1], reference_gradients[1]),
    ]:
        assert float(jnp.std(theirs.astype(jnp.float32))) > 0.5, name
        assert relative_error(mine, theirs) <= bound, name


def test_conv_picks_the_fast_forms():
    assert isinstance(conv(64, 1, "c", jnp.float32), Conv1x1)
    assert isinstance(conv(128, 3, "c", jnp.bfloat16, padding=1), Conv3x3InRowTiles)
    # fp32, or narrow: XLA's convolution forward is as fast or faster, its kernel gradient is not
    assert isinstance(conv(128, 3, "c", jnp.float32, padding=1), Conv3x3)
    assert isinstance(conv(32, 3, "c", jnp.bfloat16, padding=1), Conv3x3)
    assert isinstance(conv(128, 3, "c", jnp.bfloat16, stride=2, padding=1), StridedConvAsMatmul)
    assert isinstance(conv(128, 3, "c", jnp.float32, stride=2, padding=1), StridedConvAsMatmul)
    with traced_forms("plain"):  # GPU / TPU: the device's own convolutions
        assert isinstance(conv(128, 3, "c", jnp.bfloat16, padding=1), nn.Conv)
        assert isinstance(conv(128, 3, "c", jnp.float32, padding=1), nn.Conv)
        assert isinstance(conv(128, 3, "c", jnp.bfloat16, stride=2, padding=1), nn.Conv)
        assert isinstance(conv(64, 1, "c", jnp.float32), Conv1x1)  # a matmul everywhere
    with pytest.raises(ValueError, match="forms must be one of"):
        traced_forms("gpu").__enter__()


def test_traced_forms_apply_to_their_own_thread():
    seen = []
    with traced_forms("plain"):
        assert not cpu_forms()
        other = threading.Thread(target=lambda: seen.append(cpu_forms()))
        other.start()
        other.join()
    assert seen == [True] and cpu_forms()  # the other thread saw this CPU backend's default


@pytest.mark.parametrize("height", [11, 12])  # bands of 2 rows: a padded last band, whole bands
@pytest.mark.parametrize("forms", ["cpu", "plain"])
def test_in_row_tiles_is_the_whole_map(forms, height):
    maps = _random((2, height, 5, 3), seed=11), _random((2, height, 5, 1), seed=12)

    def chain(a, b):  # per pixel
        return jnp.tanh(a * b) + a

    def tiled(a, b):
        return in_row_tiles(chain, a, b, rows=4)

    with traced_forms(forms):
        # The CPU form loops over bands of rows; the plain form is the chain itself, in one piece.
        assert ("scan" in str(jax.make_jaxpr(tiled)(*maps))) == (forms == "cpu")
        ours, ours_vjp = jax.vjp(jax.jit(tiled), *maps)
    expected, expected_vjp = jax.vjp(chain, *maps)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(expected))
    upstream = _random(expected.shape, seed=13)
    for mine, theirs in zip(ours_vjp(upstream), expected_vjp(upstream), strict=True):
        np.testing.assert_allclose(np.asarray(mine), np.asarray(theirs), rtol=LAYER_FP32_RELATIVE, atol=1e-6)


@pytest.mark.parametrize("bins", [64, 16, 2, 1, 48])  # 48: not a power of two, the library sort
def test_sort_last_axis_is_sort(bins):
    x = np.random.default_rng(bins).standard_normal((3, 4, 5, bins)).astype(np.float32)
    x[0, 0, 0, : bins // 2] = 0.5  # ties
    x[1, 1, 1] = np.sort(x[1, 1, 1])[::-1]  # reversed
    np.testing.assert_array_equal(np.asarray(jax.jit(sort_last_axis)(jnp.asarray(x))), np.sort(x, axis=-1))


def test_sum_last_axis_in_order_and_its_gradient_are_the_chain_of_adds():
    """The same sum, in the same order, as `sum_in_order` over the axis's one-element slices; the gradient is
    autodiff's of that chain."""
    x = _random((2, 3, 5, 64), seed=90) * 10
    upstream = _random((2, 3, 5, 1), seed=91)
    ours, ours_vjp = jax.vjp(sum_last_axis_in_order, x)
    chain, chain_vjp = jax.vjp(lambda x: sum_in_order([x[..., i : i + 1] for i in range(64)]), x)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(chain))
    (ours_gradient,), (chain_gradient,) = ours_vjp(upstream), chain_vjp(upstream)
    assert ours_gradient.shape == x.shape and float(jnp.std(chain_gradient)) > 0.5
    np.testing.assert_array_equal(np.asarray(ours_gradient), np.asarray(chain_gradient))


def test_row_tiled_layers_export_with_a_symbolic_batch():
    """`jax.export` with a symbolic batch (zoedepth_jax.export) traces the row loops without a concrete batch size."""
    from jax import export

    module = Conv3x3InRowTiles(128)
    x = _random((2, 5, 4, 8), seed=5, dtype=jnp.bfloat16)
    params = module.init(jax.random.key(0), x)
    (batch,) = export.symbolic_shape("b")
    spec = jax.ShapeDtypeStruct((batch, 5, 4, 8), jnp.bfloat16)
    exported = export.export(jax.jit(module.apply))(params, spec)
    np.testing.assert_array_equal(np.asarray(exported.call(params, x)), np.asarray(jax.jit(module.apply)(params, x)))


def _attention_whole(query, key, value, bias_table, bias_index):
    """The textbook form: every score of every head at once."""
    scores = jnp.einsum("bhqd,bhkd->bhqk", query, key) * query.shape[-1] ** -0.5 + bias_table[:, bias_index][None]
    return jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(scores, axis=-1), value)


# batch 1, 3, 5: one, two and three query chunks; 4 heads: two per step; 3 heads: one per step
@pytest.mark.parametrize("forms", ["cpu", "plain"])
@pytest.mark.parametrize("batch, heads, grid", [(1, 4, (3, 5)), (3, 4, (4, 4)), (5, 3, (2, 7)), (2, 1, (1, 1))])
def test_attention_in_steps_is_whole_attention(batch, heads, grid, forms):
    tokens = grid[0] * grid[1] + 1
    query, key, value = (_random((batch, heads, tokens, 8), seed) * 2 for seed in (6, 7, 8))
    bias_index = relative_position_index(grid)
    bias_table = _random((heads, int(bias_index.max()) + 1), seed=9)

    def attend(q, k, v, table):
        return attention_with_relative_bias(q, k, v, table, bias_index)

    with traced_forms(forms):
        assert ("scan" in str(jax.make_jaxpr(attend)(query, key, value, bias_table))) == (forms == "cpu")
        ours = jax.jit(attend)(query, key, value, bias_table)
    reference = _attention_whole(query, key, value, bias_table, bias_index)
    assert ours.shape == reference.shape and float(jnp.std(reference)) > 0.3
    assert relative_error(ours, reference) <= LAYER_FP32_RELATIVE
    swapped = jnp.roll(reference, 1, axis=1)  # another head's output is far outside the bound
    assert heads == 1 or relative_error(ours, swapped) > 0.1


def test_bf16_matmul_gradients_are_bf16_matmuls():
    """`matmul_in_f32`'s bf16 gradients: fp32 autodiff's, rounded to bf16, and computed by bf16 x bf16 dots."""
    x = _random((2, 5, 16), seed=70, dtype=jnp.bfloat16)
    weight = (_random((16, 8), seed=71) / 4).astype(jnp.bfloat16)
    upstream = _random((2, 5, 8), seed=72, dtype=jnp.bfloat16)

    def layer(x, weight):  # as the layers use it: the fp32 result rounded to bf16
        return matmul_in_f32(x, weight).astype(jnp.bfloat16)

    def reference(x, weight):
        return x.astype(jnp.float32) @ weight.astype(jnp.float32)

    ours = jax.vjp(layer, x, weight)[1](upstream)
    expected = jax.vjp(reference, x, weight)[1](upstream.astype(jnp.float32))
    for mine, theirs in zip(ours, expected, strict=True):
        assert mine.dtype == jnp.bfloat16 and float(jnp.std(theirs)) > 0.3
        np.testing.assert_array_equal(np.asarray(mine, np.float32), np.asarray(theirs.astype(jnp.bfloat16), np.float32))
    backward = jax.jit(lambda x, weight: jax.vjp(layer, x, weight)[1](upstream)).lower(x, weight).as_text()
    dots = re.findall(r"stablehlo.dot_general .*", backward)  # the two gradients (the forward is not needed)
    assert len(dots) == 2 and all(re.search(r"\(tensor<[^>]*bf16>, tensor<[^>]*bf16>\)", dot) for dot in dots), dots


def _dot_operand_types(compiled_text: str) -> list[tuple[str, str]]:
    """The element types of the two operands of every dot in an XLA program's text, each looked up in the
    computation that holds the dot."""
    found, types = [], {}
    for line in compiled_text.splitlines():
        if not line.startswith(" "):  # a computation starts (or ends): its names are its own
            types = {}
        definition = re.match(r"\s*(?:ROOT )?(%\S+) = (\w+)\[", line)
        if definition:
            types[definition.group(1)] = definition.group(2)
        operands = re.search(r" dot\((%[^,\s]+), (%[^)\s]+)\)", line)
        if operands:
            found.append((types[operands.group(1)], types[operands.group(2)]))
    return found


def test_bf16_weight_gradient_runs_as_a_bf16_dot_on_the_cpu():
    """XLA:CPU would fold a plain transpose of x into the weight gradient's dot (x^T g contracting x's leading
    axis) and run that dot in fp32 on converted operands; under the CPU forms every dot of the backward, as
    compiled, reads bf16 operands."""
    x = _random((2, 40, 64), seed=73, dtype=jnp.bfloat16)
    weight = _random((64, 32), seed=74, dtype=jnp.bfloat16)
    upstream = _random((2, 40, 32), seed=75, dtype=jnp.bfloat16)

    def compiled_backward(forms: str) -> str:
        def backward(x, weight):  # a function of its own per call: jit's cache does not know the forms
            return jax.vjp(lambda x, weight: matmul_in_f32(x, weight).astype(jnp.bfloat16), x, weight)[1](upstream)

        with traced_forms(forms):
            return jax.jit(backward).lower(x, weight).compile().as_text()

    operand_types = _dot_operand_types(compiled_backward("cpu"))
    assert len(operand_types) == 2 and all(pair == ("bf16", "bf16") for pair in operand_types), operand_types
    # The plain form's folded transpose, for contrast (and a check of the parser): a dot of fp32 operands.
    assert ("f32", "f32") in _dot_operand_types(compiled_backward("plain"))


# batch 2: one chunk, the table's gradient summed over two images; batch 3 with 15 tokens: two chunks, the last
# with a padded row; 3 heads: one per step
@pytest.mark.parametrize("forms", ["cpu", "plain"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("batch, heads, grid", [(2, 4, (3, 5)), (3, 3, (2, 7))])
def test_attention_gradients_are_autodiffs_of_the_whole_attention(batch, heads, grid, dtype, forms):
    """The attention's own backward (softmax's row sums taken as d context . context; under the CPU forms, a loop
    over the forward's steps) gives autodiff's gradients of the textbook form, for q, k, v and the
    relative-position table, on both forms (chunked and whole)."""
    tokens = grid[0] * grid[1] + 1
    query, key, value = (_random((batch, heads, tokens, 8), seed, dtype) * 2 for seed in (60, 61, 62))
    bias_index = relative_position_index(grid)
    bias_table = _random((heads, int(bias_index.max()) + 1), seed=63)
    upstream = _random((batch, heads, tokens, 8), seed=64, dtype=dtype)

    def gradients(attend):
        return jax.jit(lambda *inputs: jax.vjp(attend, *inputs)[1](upstream))(query, key, value, bias_table)

    with traced_forms(forms):
        ours = gradients(lambda q, k, v, table: attention_with_relative_bias(q, k, v, table, bias_index))
    upstream = upstream.astype(jnp.float32)  # the textbook form runs in fp32 from the same (rounded) inputs
    reference = gradients(
        lambda q, k, v, table: _attention_whole(
            q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32), table, bias_index
        )
    )
    bound = LAYER_FP32_RELATIVE if dtype == jnp.float32 else ATTENTION_GRADIENT_BF16_RELATIVE
    for name, mine, theirs in zip(["query", "key", "value", "table"], ours, reference, strict=True):
        assert mine.dtype == (jnp.float32 if name == "table" else dtype), name
        assert float(jnp.std(theirs)) > 0.1, name
        assert relative_error(mine, theirs) <= bound, name


def test_bf16_attention_gradient_runs_as_bf16_dots_on_the_cpu():
    """Under the CPU forms every dot of the attention's forward and backward pass, as compiled, reads bf16 operands:
    the key and value gradients come from transposes laid out outside the loop, not from products that contract
    both operands' leading axes, which XLA:CPU would run in fp32 on converted copies."""
    batch, heads, grid = 2, 4, (3, 5)
    tokens = grid[0] * grid[1] + 1
    query, key, value = (_random((batch, heads, tokens, 8), seed, jnp.bfloat16) for seed in (65, 66, 67))
    bias_index = relative_position_index(grid)
    bias_table = _random((heads, int(bias_index.max()) + 1), seed=68)
    upstream = _random((batch, heads, tokens, 8), seed=69, dtype=jnp.bfloat16)

    def gradients(*inputs):
        attend = functools.partial(attention_with_relative_bias, bias_index=bias_index)
        return jax.vjp(attend, *inputs)[1](upstream)

    with traced_forms("cpu"):
        compiled = jax.jit(gradients).lower(query, key, value, bias_table).compile().as_text()
    operand_types = _dot_operand_types(compiled)
    assert len(operand_types) == 6, operand_types  # scores, context; then d weights, d q, d k, d v
    assert all(pair == ("bf16", "bf16") for pair in operand_types), operand_types


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_residual_stream_boundary_is_the_identity_and_so_is_its_gradient(dtype):
    x = _random((2, 5, 8), seed=40, dtype=dtype)
    upstream = _random((2, 5, 8), seed=41, dtype=dtype).at[1, 2, 3].set(jnp.nan)  # a NaN takes the loop twice

    def through(boundary):
        return jax.jit(lambda x: jax.vjp(boundary, x)[1](upstream)[0])

    with traced_forms("cpu"):
        values = jax.jit(residual_stream_boundary)(x)
        gradient = through(residual_stream_boundary)(x)
    np.testing.assert_array_equal(np.asarray(values, np.float32), np.asarray(x, np.float32))
    np.testing.assert_array_equal(np.asarray(gradient, np.float32), np.asarray(upstream, np.float32))
    assert gradient.dtype == dtype


def _encoder_layers_per_fusion(loss, *args) -> int:
    """The most encoder layers (`encoder/layer_K` in op names) that one fused computation of `jax.grad(loss)`'s
    compiled program draws on."""
    with traced_forms("cpu"):
        text = jax.jit(jax.grad(loss)).lower(*args).compile().as_text()
    most, layers, fused = 0, set(), False
    for line in text.splitlines():
        if not line.startswith(" ") and line.rstrip().endswith("{"):
            layers, fused = set(), line.startswith("%fused")
        elif line.startswith("}") and fused:
            most = max(most, len(layers))
        else:
            layers.update(re.findall(r"encoder/layer_(\d+)/", line))
    return most


@pytest.mark.parametrize("backbone", ["beit", "dinov2"])
def test_backward_fusions_stay_within_a_layer(backbone, monkeypatch):
    """XLA:CPU would recompute the residual stream's gradient from the last layer down in every layer's backward
    (fusions that grow with the depth, work quadratic in it): the boundary between layers stops that."""
    layers = 8
    if backbone == "beit":
        config = BeitConfig(**dict(TINY_BACKBONE, num_hidden_layers=layers, out_indices=(8,)))
        module, x = BeitBackbone(config), jnp.ones((1, 32, 48, 3))
    else:
        config = Dinov2Config(**dict(TINY_DINOV2, num_hidden_layers=layers, out_indices=(8,)))
        module, x = Dinov2Model(config), jnp.ones((1, 28, 42, 3))
    params = module.init(jax.random.key(0), x)["params"]

    def loss(params):
        output = module.apply({"params": params}, x)
        last = output[-1] if backbone == "beit" else output.last_hidden_state
        return jnp.sum(last**2)

    assert _encoder_layers_per_fusion(loss, params) <= 2
    for file in (beit, dinov2):
        monkeypatch.setattr(file, "residual_stream_boundary", lambda hidden: hidden)
    assert _encoder_layers_per_fusion(loss, params) > layers // 2  # what the boundary prevents
