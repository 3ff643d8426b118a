"""BEiT backbone (transformers `BeitBackbone`) as used by ZoeDepth: patch embedding, CLS token, layers with a
per-layer relative-position bias resized to the input's patch grid, and layer scale.

Reference: transformers `models/beit/modeling_beit.py` (MiDaS v3.1 arbitrary-window variant).
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from zoedepth_jax.config import BeitConfig
from zoedepth_jax.errors import ArgumentError
from zoedepth_jax.modeling.layers import (
    DenseBlock,
    Dtype,
    cpu_forms,
    dense,
    gelu,
    layer_norm,
    residual_stream_boundary,
    sum_in_order,
)
from zoedepth_jax.ops import resize_bilinear


@functools.lru_cache(maxsize=16)
def relative_position_index(grid: tuple[int, int]) -> np.ndarray:
    """`[N+1, N+1]` indices into the relative-position table for a `grid = (rows, cols)` of N patches plus CLS.

    Patch pairs index the `(2*rows-1) x (2*cols-1)` table of offsets; the last three rows of the table hold
    CLS->patch, patch->CLS and CLS->CLS.
    """
    rows, cols = grid
    num_offsets = (2 * rows - 1) * (2 * cols - 1)
    coords = np.stack(np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")).reshape(2, -1)  # [2, N]
    delta = coords[:, :, None] - coords[:, None, :]  # [2, N, N]
    index = np.empty((rows * cols + 1,) * 2, dtype=np.int32)
    index[1:, 1:] = (delta[0] + rows - 1) * (2 * cols - 1) + (delta[1] + cols - 1)
    index[0, :] = num_offsets
    index[:, 0] = num_offsets + 1
    index[0, 0] = num_offsets + 2
    return index


class RelativePositionBias(nn.Module):
    """The per-layer bias table, resized (bilinear, torch `align_corners=False`) from the pretraining window to
    the input's patch grid. Returns the table, `[heads, entries]`; the bias of query i and key j is entry
    `relative_position_index(grid)[i, j]`. Everything but the table's values depends on static shapes only."""

    num_heads: int
    window_size: int  # side of the pretraining patch grid

    @nn.compact
    def __call__(self, grid: tuple[int, int]) -> jnp.ndarray:  # -> [heads, (2*rows-1) * (2*cols-1) + 3]
        side = 2 * self.window_size - 1
        table = self.param(
            "relative_position_bias_table", nn.initializers.zeros, (side * side + 3, self.num_heads), jnp.float32
        )
        # transformers views the offset table as (width, height) before resizing to (height, width); the two are
        # equal for the square pretraining windows of every BEiT checkpoint.
        offsets = table[:-3].reshape(1, side, side, self.num_heads)
        offsets = resize_bilinear(offsets, (2 * grid[0] - 1, 2 * grid[1] - 1), align_corners=False)
        return jnp.concatenate([offsets.reshape(-1, self.num_heads), table[-3:]], axis=0).T


# Steps of `attention_with_relative_bias`: each covers HEADS_PER_STEP heads and one chunk of queries, of every
# image. Per (image, head) the two matmuls are then [Nq, 64] x [64, N] and [Nq, N] x [N, 64] with Nq in the
# hundreds, which XLA:CPU's dot runs far faster than many small ones (steps of a few dozen queries of all heads
# were slower at every batch size: benchmarks/HISTORY.md), while a step's scores ([B, 2, Nq, N] fp32) still
# stay in the last-level cache. Queries per step shrink as the batch grows: ceil(B / 2) chunks, so a step holds
# about 2 x 2 x N score rows at any batch.
HEADS_PER_STEP = 2
QUERY_CHUNKS_SYMBOLIC_BATCH = 4  # `jax.export` with a symbolic batch: the batch-8 choice


def query_chunks(batch) -> int:
    """How many chunks the queries are split into, for a batch size (an int, or symbolic under `jax.export`)."""
    return -(-batch // 2) if isinstance(batch, int) else QUERY_CHUNKS_SYMBOLIC_BATCH


def attention_step(query, key, value, bias, dropout_rate=0.0, dropout_key=None):
    """softmax(q k^T / sqrt(d) + bias) v for `query [B, heads, Nq, d]`, `key`/`value [B, heads, Nk, d]` and
    `bias [heads, Nq, Nk]` (or None: no bias): scores and softmax in fp32 (as transformers), weights and context in
    the inputs' dtype with fp32 accumulation; dropout on the weights when `dropout_rate > 0` (training). Without
    dropout the gradient is `_attention`'s."""
    if dropout_rate == 0:
        return _attention(query, key, value, bias).astype(query.dtype)
    weights = _dropped(_attention_weights(query, key, bias).astype(query.dtype), dropout_rate, dropout_key)
    return _context(weights, value).astype(query.dtype)


def _attention_weights(query, key, bias):  # -> softmax(q k^T / sqrt(d) + bias) [B, heads, Nq, Nk], fp32
    scores = jnp.einsum("bhqd,bhkd->bhqk", query, key, preferred_element_type=jnp.float32)
    scores = scores * query.shape[-1] ** -0.5
    if bias is not None:
        scores = scores + bias[None]
    return jax.nn.softmax(scores, axis=-1)


def _dropped(weights, dropout_rate, dropout_key):  # dropout of the weights, in their dtype
    keep = jax.random.bernoulli(dropout_key, 1.0 - dropout_rate, weights.shape)
    return jnp.where(keep, weights / (1.0 - dropout_rate), 0).astype(weights.dtype)


def _context(weights, value):  # [B, heads, Nq, Nk] x [B, heads, Nk, d] -> [B, heads, Nq, d], fp32
    return jnp.einsum("bhqk,bhkd->bhqd", weights, value, preferred_element_type=jnp.float32)


@jax.custom_vjp
def _attention(query, key, value, bias):
    """The context [B, heads, Nq, d] in fp32, before rounding to the inputs' dtype; its gradient is
    `_attention_backward`'s."""
    return _context(_attention_weights(query, key, bias).astype(query.dtype), value)


def _attention_forward(query, key, value, bias):
    weights = _attention_weights(query, key, bias)
    context = _context(weights.astype(query.dtype), value)
    return context, (query, key, value, bias, context, weights)


def _attention_backward(saved, d_context):
    query, key, value, bias, context, weights = saved
    dtype = query.dtype
    d_context = d_context.astype(dtype)
    d_scores, d_scaled, d_query = _score_gradients(weights, context, d_context, key, value)
    d_key = jnp.einsum("bhqk,bhqd->bhkd", d_scaled, query, preferred_element_type=jnp.float32)
    d_value = jnp.einsum("bhqk,bhqd->bhkd", weights.astype(dtype), d_context, preferred_element_type=jnp.float32)
    d_bias = None if bias is None else sum_in_order(list(d_scores)).astype(bias.dtype)
    return d_query.astype(dtype), d_key.astype(dtype), d_value.astype(value.dtype), d_bias


_attention.defvjp(_attention_forward, _attention_backward)


def _score_gradients(weights, context, d_context, key, value):
    """The backward pass of `_attention` up to the scores, from its softmax `weights [B, h, Nq, Nk]` and `context
    [B, h, Nq, d]` (fp32, as the forward pass computed them) and the context's gradient `d_context [B, h, Nq, d]` in
    the inputs' dtype: `(d_scores [B, h, Nq, Nk] fp32, the same scaled by 1/sqrt(d) in the inputs' dtype, d_query
    [B, h, Nq, d] fp32)`. The key and value gradients are products of these with q and d_context.

    Softmax's backward needs, per query, the sum over keys of weights * d weights, as autodiff computes it; that
    equals d context . context (d weights = d context v^T, and context = weights v), a sum over d (64) instead of
    over every key, done on [Nq, d] instead of [Nq, Nk] (XLA:CPU reduces the wide rows slowly).
    """
    d_weights = jnp.einsum("bhqd,bhkd->bhqk", d_context, value, preferred_element_type=jnp.float32)
    row_sums = jnp.sum(d_context.astype(jnp.float32) * context, axis=-1, keepdims=True)
    d_scores = weights * (d_weights - row_sums)
    d_scaled = (d_scores * d_context.shape[-1] ** -0.5).astype(d_context.dtype)
    d_query = jnp.einsum("bhqk,bhkd->bhqd", d_scaled, key, preferred_element_type=jnp.float32)
    return d_scores, d_scaled, d_query


@dataclasses.dataclass(frozen=True)
class _Steps:
    """How `attention_with_relative_bias` cuts its work: `groups` of `heads_per_step` heads, each by `chunks` of
    `chunk` queries (the last chunk padded with `padding` rows of zeros), every image in each step."""

    batch: int
    heads: int
    num_queries: int
    heads_per_step: int
    chunks: int
    chunk: int

    @classmethod
    def of(cls, query) -> _Steps:  # query [B, heads, Nq, d]
        batch, heads, num_queries, _ = query.shape
        chunks = min(query_chunks(batch), num_queries)
        heads_per_step = HEADS_PER_STEP if heads % HEADS_PER_STEP == 0 else 1
        return cls(batch, heads, num_queries, heads_per_step, chunks, -(-num_queries // chunks))

    @property
    def groups(self) -> int:
        return self.heads // self.heads_per_step

    @property
    def padding(self) -> int:
        return self.chunks * self.chunk - self.num_queries

    def by_group(self, x):  # [B, heads, ...] -> [groups, B, heads_per_step, ...]
        return jnp.moveaxis(x.reshape(self.batch, self.groups, self.heads_per_step, *x.shape[2:]), 1, 0)

    def from_groups(self, x):  # [groups, B, heads_per_step, ...] -> [B, heads, ...]
        return jnp.moveaxis(x, 0, 1).reshape(self.batch, self.heads, *x.shape[3:])

    def by_step(self, x):  # [B, heads, Nq, d] -> [groups, chunks, B, heads_per_step, chunk, d]
        x = jnp.pad(x, ((0, 0), (0, 0), (0, self.padding), (0, 0)))
        x = x.reshape(self.batch, self.heads, self.chunks, self.chunk, x.shape[-1])
        return jnp.moveaxis(self.by_group(x), 3, 1)

    def from_steps(self, x):  # [groups, chunks, B, heads_per_step, chunk, d] -> [B, heads, Nq, d]
        x = x.transpose(2, 0, 3, 1, 4, 5).reshape(self.batch, self.heads, self.chunks * self.chunk, x.shape[-1])
        return x[:, :, : self.num_queries]

    def bias_rows(self, bias_index: np.ndarray) -> jnp.ndarray:  # [Nq, Nk] -> [chunks, chunk, Nk]
        return jnp.asarray(np.pad(bias_index, ((0, self.padding), (0, 0))).reshape(self.chunks, self.chunk, -1))


def attention_with_relative_bias(query, key, value, bias_table, bias_index, dropout_rate=0.0, dropout_rng=None):
    """softmax(q k^T / sqrt(d) + bias) v, with the bias gathered from `bias_table [heads, entries]` by the static
    `bias_index [Nq, Nk]`, computed a few heads and one chunk of queries (of every image) at a time.

    The whole `[B, heads, Nq, Nk]` score tensor never exists: XLA:CPU has no fused attention, and writing the
    scores, the bias and the weights of a BEiT-L layer to memory and reading them back cost more than the matmuls
    (benchmarks/HISTORY.md; the outputs are identical). The loops run over
    heads and chunks of queries, never over images: the batch axis stays a plain axis of every step, so a batch
    sharded over devices stays sharded (a loop over images made XLA gather every image's q, k and v onto every
    device). Each output row depends on its own query and head only, so the result is the unchunked one: scores
    and softmax in fp32, weights and context in the inputs' dtype with fp32 accumulation. Without dropout the
    backward pass loops over the same steps (`_attention_in_steps`); dropout on the weights (training) draws one
    key per step and leaves the gradient to autodiff.
    `query [B, heads, Nq, d]`, `key`/`value [B, heads, Nk, d]` -> `[B, heads, Nq, d]`.
    """
    if not cpu_forms():  # GPU / TPU: every score at once, for the device to fuse
        return attention_step(query, key, value, bias_table[:, bias_index], dropout_rate, dropout_rng)
    steps = _Steps.of(query)
    if dropout_rate == 0:
        return _attention_in_steps(steps, bias_index, bias_table.shape)(query, key, value, bias_table)
    queries = steps.by_step(query)
    context, _ = _attend_in_steps(steps, queries, key, value, bias_table, bias_index, dropout_rate, dropout_rng)
    return steps.from_steps(context).astype(query.dtype)


def _attend_in_steps(steps: _Steps, queries, key, value, bias_table, bias_index, dropout_rate, dropout_rng):
    """The forward pass of `attention_with_relative_bias` over its steps, from the queries cut into them
    (`steps.by_step(query)`): `(context, weights)`, fp32, as `[groups, chunks, B, heads_per_step, chunk, d or Nk]`;
    the weights are the softmax's, before any dropout."""
    dtype = queries.dtype
    rows = steps.bias_rows(bias_index)
    tables = bias_table.reshape(steps.groups, steps.heads_per_step, -1)
    dropping = dropout_rate > 0
    step_keys = (
        jax.random.split(dropout_rng, (steps.groups, steps.chunks))
        if dropping
        else jnp.zeros((steps.groups, steps.chunks))
    )

    def group_step(_, group_inputs):  # one group of heads, all queries
        group_queries, group_key, group_value, table, chunk_keys = group_inputs

        def chunk_step(_, chunk_inputs):  # [B, heads_per_step, chunk, d] -> (same, [B, heads_per_step, chunk, Nk])
            query_chunk, row_indices, chunk_key = chunk_inputs
            weights = _attention_weights(query_chunk, group_key, table[:, row_indices])
            kept = weights.astype(dtype)
            if dropping:
                kept = _dropped(kept, dropout_rate, chunk_key)
            return None, (_context(kept, group_value), weights)

        return None, jax.lax.scan(chunk_step, None, (group_queries, rows, chunk_keys))[1]

    inputs = (queries, steps.by_group(key), steps.by_group(value), tables, step_keys)
    return jax.lax.scan(group_step, None, inputs)[1]


def _attention_in_steps(steps: _Steps, bias_index: np.ndarray, table_shape: tuple[int, int]):
    """`attention_with_relative_bias` without dropout, as a function of `(query, key, value, bias_table)` whose
    backward pass loops over the same steps: `_score_gradients` per step, then the key and value gradients
    transposed, `q^T d_scores` and `d_context^T weights` ([d, Nq] x [Nq, Nk]), from transposes of q and d_context
    laid out once outside the loop. Autodiff's `d_scores^T q` and `weights^T d_context` contract both operands'
    leading axes, which XLA:CPU runs off its bf16 kernels, in fp32 on converted copies of the [Nq, Nk] maps
    (benchmarks/HISTORY.md). The key, value and table gradients add up over the chunks of queries; the table's is a
    scatter-add of the scores' gradient summed over the images as a chain of adds (`sum_in_order`)."""

    @jax.custom_vjp
    def attend(query, key, value, bias_table):
        return forward(query, key, value, bias_table)[0]

    def forward(query, key, value, bias_table):
        queries = steps.by_step(query)
        context, weights = _attend_in_steps(steps, queries, key, value, bias_table, bias_index, 0.0, None)
        return steps.from_steps(context).astype(query.dtype), (queries, key, value, context, weights)

    def backward(saved, d_context):  # d_context [B, heads, Nq, d]
        queries, key, value, context, weights = saved
        dtype = queries.dtype
        head_dim, num_keys = key.shape[-1], key.shape[-2]
        d_steps = steps.by_step(d_context.astype(dtype))
        per_step = (context, weights, d_steps, jnp.swapaxes(d_steps, -1, -2), jnp.swapaxes(queries, -1, -2))

        def group_step(_, group_inputs):
            group_key, group_value, *chunk_inputs = group_inputs

            def chunk_step(sums, inputs):
                d_key_t, d_value_t, d_table = sums
                context, weights, d_context, d_context_t, query_t, row_indices = inputs
                d_scores, d_scaled, d_query = _score_gradients(weights, context, d_context, group_key, group_value)
                d_key_t = d_key_t + jnp.einsum("bhdq,bhqk->bhdk", query_t, d_scaled, preferred_element_type=jnp.float32)
                d_value_t = d_value_t + jnp.einsum(
                    "bhdq,bhqk->bhdk", d_context_t, weights.astype(dtype), preferred_element_type=jnp.float32
                )
                d_table = d_table.at[:, row_indices].add(sum_in_order(list(d_scores)))
                return (d_key_t, d_value_t, d_table), d_query.astype(dtype)

            zeros_t = jnp.zeros((steps.batch, steps.heads_per_step, head_dim, num_keys), jnp.float32)
            sums = (zeros_t, zeros_t, jnp.zeros((steps.heads_per_step, table_shape[1]), jnp.float32))
            return None, jax.lax.scan(chunk_step, sums, (*chunk_inputs, steps.bias_rows(bias_index)))

        inputs = (steps.by_group(key), steps.by_group(value), *per_step)
        _, ((d_key_t, d_value_t, d_table), d_query) = jax.lax.scan(group_step, None, inputs)
        d_key, d_value = (jnp.swapaxes(steps.from_groups(x), 2, 3).astype(dtype) for x in (d_key_t, d_value_t))
        return steps.from_steps(d_query), d_key, d_value, d_table.reshape(table_shape)

    attend.defvjp(forward, backward)
    return attend


class SelfAttention(nn.Module):
    """Multi-head self-attention; the key projection has no bias (BEiT)."""

    config: BeitConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, grid, deterministic: bool = True):  # x: [B, N+1, D]
        heads = self.config.num_attention_heads
        batch, tokens, width = x.shape
        head_dim = width // heads

        def project(name, bias=True):  # -> [B, heads, N+1, head_dim]
            y = dense(width, self.dtype, name, use_bias=bias)(x)
            return y.reshape(batch, tokens, heads, head_dim).transpose(0, 2, 1, 3)

        query, key, value = project("query"), project("key", bias=False), project("value")
        bias_table = RelativePositionBias(heads, self.config.window_size, name="relative_position_bias")(grid)
        dropout_rate = 0.0 if deterministic else self.config.attention_probs_dropout_prob
        dropout_rng = self.make_rng("dropout") if dropout_rate > 0 else None
        context = attention_with_relative_bias(
            query, key, value, bias_table, relative_position_index(grid), dropout_rate, dropout_rng
        )
        return context.transpose(0, 2, 1, 3).reshape(batch, tokens, width)


class Attention(nn.Module):
    config: BeitConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, grid, deterministic: bool = True):
        x = SelfAttention(self.config, self.dtype, name="attention")(x, grid, deterministic)
        return DenseBlock(self.config.hidden_size, self.dtype, name="output")(x)


class Layer(nn.Module):
    """Pre-norm transformer block with layer scale (`lambda_1`, `lambda_2`).

    Training mode (`deterministic=False`), as transformers' `BeitLayer`: each branch's output goes through
    dropout (`hidden_dropout_prob`), then the layer scale, then drop-path at this layer's `drop_path_rate`
    (whole samples of the branch dropped, the rest scaled by 1/keep). Rates of 0 leave the inference path as is.
    """

    config: BeitConfig
    drop_path_rate: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, grid, deterministic: bool = True):
        config = self.config

        def branch_end(branch, scale_name, y):  # dropout -> layer scale -> drop-path, as transformers orders them
            y = nn.Dropout(config.hidden_dropout_prob, name=f"{branch}_dropout")(y, deterministic)
            if config.layer_scale_init_value > 0:
                init = nn.initializers.constant(config.layer_scale_init_value)
                y = y * self.param(scale_name, init, (config.hidden_size,), jnp.float32).astype(y.dtype)
            drop_path = nn.Dropout(self.drop_path_rate, broadcast_dims=(1, 2), name=f"{branch}_drop_path")
            return drop_path(y, deterministic)  # y: [B, N+1, D], one keep/drop draw per sample

        normed = layer_norm(config.layer_norm_eps, "layernorm_before")(x).astype(self.dtype)
        attended = Attention(config, self.dtype, name="attention")(normed, grid, deterministic)
        x = x + branch_end("attention", "lambda_1", attended)
        normed = layer_norm(config.layer_norm_eps, "layernorm_after")(x).astype(self.dtype)
        hidden = DenseBlock(config.intermediate_size, self.dtype, name="intermediate")(normed)
        hidden = gelu(hidden)
        return x + branch_end("mlp", "lambda_2", DenseBlock(config.hidden_size, self.dtype, name="output")(hidden))


class Embeddings(nn.Module):
    config: BeitConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, pixel_values, deterministic: bool = True):  # [B, H, W, 3] -> [B, 1 + H/p * W/p, D]
        config = self.config
        patches = PatchEmbeddings(config, self.dtype, name="patch_embeddings")(pixel_values)
        batch, _, width = patches.shape
        cls_token = self.param("cls_token", nn.initializers.zeros, (1, 1, width), jnp.float32)
        cls_token = jnp.broadcast_to(cls_token.astype(patches.dtype), (batch, 1, width))
        embeddings = jnp.concatenate([cls_token, patches], axis=1)
        return nn.Dropout(config.hidden_dropout_prob, name="dropout")(embeddings, deterministic)


class PatchEmbeddings(nn.Module):
    config: BeitConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, pixel_values):
        p = self.config.patch_size
        projection = nn.Conv(
            self.config.hidden_size, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype, name="projection"
        )
        patches = projection(pixel_values)  # [B, H/p, W/p, D]
        return patches.reshape(patches.shape[0], -1, patches.shape[-1])


class Encoder(nn.Module):
    config: BeitConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, grid, deterministic: bool = True) -> list[jnp.ndarray]:
        """Returns the output of every layer (hidden state i+1 is the output of layer i).

        Drop-path rates grow linearly with depth, from 0 at the first layer to `drop_path_rate` at the last
        (transformers' rule; timm's BEiT, which the original ZoeDepth trains, uses the same schedule).
        """
        layers = self.config.num_hidden_layers
        outputs = []
        for i in range(layers):
            rate = self.config.drop_path_rate * i / max(layers - 1, 1)
            x = Layer(self.config, rate, self.dtype, name=f"layer_{i}")(x, grid, deterministic)
            x = residual_stream_boundary(x)
            outputs.append(x)
        return outputs


class BeitBackbone(nn.Module):
    """`pixel_values [B, H, W, 3]` -> the hidden states `[B, 1 + N, D]` (CLS first) of the `out_indices` layers.

    `deterministic=False` turns on the config's dropout and drop-path (rng stream "dropout")."""

    config: BeitConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, pixel_values, deterministic: bool = True) -> list[jnp.ndarray]:
        _, height, width, channels = pixel_values.shape
        p = self.config.patch_size
        if height % p or width % p or channels != 3:
            raise ArgumentError(
                f"pixel_values must be [B, H, W, 3] with H and W multiples of {p}, got {pixel_values.shape}"
            )
        grid = (height // p, width // p)
        x = Embeddings(self.config, self.dtype, name="embeddings")(pixel_values.astype(self.dtype), deterministic)
        layer_outputs = Encoder(self.config, self.dtype, name="encoder")(x, grid, deterministic)
        stages = [layer_outputs[i - 1] for i in self.config.out_indices]
        for i, stage in zip(self.config.out_indices, stages, strict=True):
            self.sow("intermediates", f"backbone_stage{i}", stage)
        return stages
