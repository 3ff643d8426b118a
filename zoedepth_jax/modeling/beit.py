"""BEiT backbone (transformers `BeitBackbone`) as used by ZoeDepth: patch embedding, CLS token, layers with a
per-layer relative-position bias resized to the input's patch grid, and layer scale.

Reference: transformers `models/beit/modeling_beit.py` (MiDaS v3.1 arbitrary-window variant).
"""

from __future__ import annotations

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
    weights = _attention_weights(query, key, bias).astype(query.dtype)
    keep = jax.random.bernoulli(dropout_key, 1.0 - dropout_rate, weights.shape)
    weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0).astype(query.dtype)
    return _context(weights, value).astype(query.dtype)


def _attention_weights(query, key, bias):  # -> softmax(q k^T / sqrt(d) + bias) [B, heads, Nq, Nk], fp32
    scores = jnp.einsum("bhqd,bhkd->bhqk", query, key, preferred_element_type=jnp.float32)
    scores = scores * query.shape[-1] ** -0.5
    if bias is not None:
        scores = scores + bias[None]
    return jax.nn.softmax(scores, axis=-1)


def _context(weights, value):  # [B, heads, Nq, Nk] x [B, heads, Nk, d] -> [B, heads, Nq, d], fp32
    return jnp.einsum("bhqk,bhkd->bhqd", weights, value, preferred_element_type=jnp.float32)


@jax.custom_vjp
def _attention(query, key, value, bias):
    """The context [B, heads, Nq, d] in fp32, before rounding to the inputs' dtype. The gradient is autodiff's but
    for one sum: softmax's backward needs, per query, sum over keys of weights * d weights, which
    equals d context . context (d weights = d context v^T, and context = weights v), a sum over d (64) instead of
    over every key (hundreds), done on [Nq, d] instead of [Nq, Nk] (XLA:CPU reduces the wide rows slowly)."""
    return _context(_attention_weights(query, key, bias).astype(query.dtype), value)


def _attention_forward(query, key, value, bias):
    weights = _attention_weights(query, key, bias)
    context = _context(weights.astype(query.dtype), value)
    return context, (query, key, value, bias, context, weights)


def _attention_backward(saved, d_context):
    query, key, value, bias, context, weights = saved
    dtype = query.dtype
    d_context_in = d_context.astype(dtype)
    d_value = jnp.einsum("bhqk,bhqd->bhkd", weights.astype(dtype), d_context_in, preferred_element_type=jnp.float32)
    d_weights = jnp.einsum("bhqd,bhkd->bhqk", d_context_in, value, preferred_element_type=jnp.float32)
    # sum over keys of weights * d_weights, per query, as d_context . context
    row_sums = jnp.sum(d_context_in.astype(jnp.float32) * context, axis=-1, keepdims=True)
    d_scores = weights * (d_weights - row_sums)  # [B, heads, Nq, Nk], fp32
    d_bias = None if bias is None else jnp.sum(d_scores, axis=0).astype(bias.dtype)
    d_scaled = (d_scores * query.shape[-1] ** -0.5).astype(dtype)
    d_query = jnp.einsum("bhqk,bhkd->bhqd", d_scaled, key, preferred_element_type=jnp.float32)
    d_key = jnp.einsum("bhqk,bhqd->bhkd", d_scaled, query, preferred_element_type=jnp.float32)
    return d_query.astype(dtype), d_key.astype(dtype), d_value.astype(value.dtype), d_bias


_attention.defvjp(_attention_forward, _attention_backward)


def attention_with_relative_bias(query, key, value, bias_table, bias_index, dropout_rate=0.0, dropout_rng=None):
    """softmax(q k^T / sqrt(d) + bias) v, with the bias gathered from `bias_table [heads, entries]` by the static
    `bias_index [Nq, Nk]`, computed a few heads and one chunk of queries (of every image) at a time.

    The whole `[B, heads, Nq, Nk]` score tensor never exists: XLA:CPU has no fused attention, and writing the
    scores, the bias and the weights of a BEiT-L layer to memory and reading them back cost more than the matmuls
    (benchmarks/HISTORY.md; the outputs are identical). The loops run over
    heads and chunks of queries, never over images: the batch axis stays a plain axis of every step, so a batch
    sharded over devices stays sharded (a loop over images made XLA gather every image's q, k and v onto every
    device). Each output row depends on its own query and head only, so the result is the unchunked one: scores
    and softmax in fp32, weights and context in the inputs' dtype with fp32 accumulation. Dropout on the weights
    (training) draws one key per step.
    `query [B, heads, Nq, d]`, `key`/`value [B, heads, Nk, d]` -> `[B, heads, Nq, d]`.
    """
    if not cpu_forms():  # GPU / TPU: every score at once, for the device to fuse
        return attention_step(query, key, value, bias_table[:, bias_index], dropout_rate, dropout_rng)
    batch, heads, num_queries, head_dim = query.shape
    num_keys = key.shape[2]
    heads_per_step = HEADS_PER_STEP if heads % HEADS_PER_STEP == 0 else 1
    groups = heads // heads_per_step
    num_chunks = min(query_chunks(batch), num_queries)
    chunk = -(-num_queries // num_chunks)  # the fewest padded rows for that many chunks
    padding = num_chunks * chunk - num_queries
    rows = jnp.asarray(np.pad(bias_index, ((0, padding), (0, 0))).reshape(num_chunks, chunk, num_keys))

    def by_group(x):  # [B, heads, ...] -> [groups, B, heads_per_step, ...]
        return jnp.moveaxis(x.reshape(batch, groups, heads_per_step, *x.shape[2:]), 1, 0)

    queries = jnp.pad(query, ((0, 0), (0, 0), (0, padding), (0, 0))).reshape(batch, heads, num_chunks, chunk, -1)
    queries = jnp.moveaxis(by_group(queries), 3, 1)  # [groups, chunks, B, heads_per_step, chunk, d]
    tables = bias_table.reshape(groups, heads_per_step, -1)
    dropping = dropout_rate > 0
    step_keys = jax.random.split(dropout_rng, (groups, num_chunks)) if dropping else jnp.zeros((groups, num_chunks))

    def group_step(_, group_inputs):  # one group of heads, all queries: -> [chunks, B, heads_per_step, chunk, d]
        group_queries, group_key, group_value, table, chunk_keys = group_inputs

        def chunk_step(_, chunk_inputs):  # [B, heads_per_step, chunk, d] -> same
            query_chunk, row_indices, chunk_key = chunk_inputs
            bias = table[:, row_indices]
            return None, attention_step(query_chunk, group_key, group_value, bias, dropout_rate, chunk_key)

        return None, jax.lax.scan(chunk_step, None, (group_queries, rows, chunk_keys))[1]

    inputs = (queries, by_group(key), by_group(value), tables, step_keys)
    _, context = jax.lax.scan(group_step, None, inputs)  # [groups, chunks, B, heads_per_step, chunk, d]
    context = context.transpose(2, 0, 3, 1, 4, 5).reshape(batch, heads, num_chunks * chunk, head_dim)
    return context[:, :, :num_queries]


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
