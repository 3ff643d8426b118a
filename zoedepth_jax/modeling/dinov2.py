"""DINOv2 backbone (transformers `Dinov2Model` and `Dinov2Backbone`), as Depth Anything uses it: patch embedding,
CLS token, absolute position embeddings resized (bicubic) from the pretraining grid to the input's patch grid
(by transformers' rule, or by DINOv2's own scale-factor rule: `Dinov2Config.interpolate_offset`), pre-norm layers
with layer scale, and a final layernorm.

Reference: transformers `models/dinov2/modeling_dinov2.py`. Parameter names are those of the files transformers
writes (`encoder.layer.3.attention.attention.query.weight`, `...layer_scale1.lambda1`), not the in-memory names
transformers 5.x gives the attention projections.
"""

from __future__ import annotations

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from zoedepth_jax.config import Dinov2Config
from zoedepth_jax.errors import ArgumentError
from zoedepth_jax.modeling.beit import attention_step
from zoedepth_jax.modeling.layers import (
    DenseBlock,
    Dtype,
    add_bias_and_round,
    dense,
    gelu,
    layer_norm,
    matmul_in_f32,
    residual_stream_boundary,
)
from zoedepth_jax.ops import resize_bicubic


@flax.struct.dataclass
class Dinov2Output:
    """`last_hidden_state [B, 1+N, D]` (after the final layernorm); `hidden_states`: the embeddings and the output
    of every layer, `num_hidden_layers + 1` arrays `[B, 1+N, D]` as transformers returns them; `feature_maps`: the
    hidden states of the config's `out_indices`, through the final layernorm when `apply_layernorm` (what
    transformers' `Dinov2Backbone` returns with `reshape_hidden_states=False`)."""

    last_hidden_state: jax.Array
    hidden_states: tuple[jax.Array, ...]
    feature_maps: tuple[jax.Array, ...]


def interpolate_position_embeddings(table: jax.Array, grid: tuple[int, int], offset: float = 0.0) -> jax.Array:
    """The position embeddings `[1, 1 + s*s, D]` of an s x s pretraining grid, for a `grid = (rows, cols)` of
    patches: `[1, 1 + rows*cols, D]`, the CLS entry unchanged. On the pretraining grid itself the table is used as
    it is; otherwise the patch entries, viewed as an s x s map, are resized in fp32 with torch's bicubic
    interpolation (`align_corners=False`, no antialias) and cast back to the table's dtype.

    `offset` 0: as transformers, resized to the grid's size (`size=`). `offset` > 0: as DINOv2's own code, resized
    by the scale factors ((rows + offset) / s, (cols + offset) / s): the output has the same size, but torch
    places the samples with the inverse of the factor instead of s / rows, so every axis is resampled, one whose
    size does not change too (`Dinov2Config.interpolate_offset`). Indices and weights depend only on the static
    shapes.
    """
    _, positions, width = table.shape
    side = round((positions - 1) ** 0.5)
    if side * side != positions - 1:
        raise ArgumentError(f"position embeddings of {positions - 1} patches do not form a square grid")
    if tuple(grid) == (side, side):
        return table
    patch_table = table[:, 1:].reshape(1, side, side, width).astype(jnp.float32)
    factors = ((grid[0] + offset) / side, (grid[1] + offset) / side) if offset else None
    resized = resize_bicubic(patch_table, tuple(grid), align_corners=False, scale_factors=factors).astype(table.dtype)
    return jnp.concatenate([table[:, :1], resized.reshape(1, grid[0] * grid[1], width)], axis=1)


class PatchEmbeddings(nn.Module):
    """A p x p convolution with stride p (`nn.Conv`'s parameters, `kernel [p, p, 3, D]`), computed as one matmul
    over the flattened patches: the windows do not overlap."""

    features: int
    patch_size: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, pixel_values):  # [B, H, W, C] -> [B, H/p * W/p, D]
        p = self.patch_size
        batch, height, width, channels = pixel_values.shape
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (p, p, channels, self.features))
        patches = pixel_values.astype(self.dtype).reshape(batch, height // p, p, width // p, p, channels)
        patches = patches.transpose(0, 1, 3, 2, 4, 5).reshape(batch, -1, p * p * channels)  # (dy, dx, c) order
        y = matmul_in_f32(patches, kernel.astype(self.dtype).reshape(-1, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        return add_bias_and_round(y, bias, self.dtype)


class PatchEmbeddingsBlock(nn.Module):
    """transformers' `patch_embeddings`, holding the convolution called `projection`."""

    features: int
    patch_size: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, pixel_values):
        return PatchEmbeddings(self.features, self.patch_size, self.dtype, name="projection")(pixel_values)


class Embeddings(nn.Module):
    config: Dinov2Config
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, pixel_values):  # [B, H, W, 3] -> [B, 1 + H/p * W/p, D]
        config = self.config
        width, p = config.hidden_size, config.patch_size
        grid = (pixel_values.shape[1] // p, pixel_values.shape[2] // p)
        patches = PatchEmbeddingsBlock(width, p, self.dtype, name="patch_embeddings")(pixel_values)
        cls_token = self.param("cls_token", nn.initializers.zeros, (1, 1, width), jnp.float32)
        positions = config.position_grid**2 + 1
        table = self.param("position_embeddings", nn.initializers.normal(0.02), (1, positions, width), jnp.float32)
        cls_token = jnp.broadcast_to(cls_token.astype(patches.dtype), (patches.shape[0], 1, width))
        embeddings = jnp.concatenate([cls_token, patches], axis=1)
        positional = interpolate_position_embeddings(table, grid, config.interpolate_offset)
        return embeddings + positional.astype(patches.dtype)


class SelfAttention(nn.Module):
    """Multi-head self-attention without a position bias; `query`, `key`, `value` have biases when `qkv_bias`."""

    config: Dinov2Config
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):  # [B, T, D] -> [B, T, D]
        heads = self.config.num_attention_heads
        batch, tokens, width = x.shape

        def project(name):  # -> [B, heads, T, head_dim]
            y = dense(width, self.dtype, name, use_bias=self.config.qkv_bias)(x)
            return y.reshape(batch, tokens, heads, width // heads).transpose(0, 2, 1, 3)

        context = attention_step(project("query"), project("key"), project("value"), None)
        return context.transpose(0, 2, 1, 3).reshape(batch, tokens, width)


class Attention(nn.Module):
    config: Dinov2Config
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        x = SelfAttention(self.config, self.dtype, name="attention")(x)
        return DenseBlock(self.config.hidden_size, self.dtype, name="output")(x)


class LayerScale(nn.Module):
    """Per-channel scale `lambda1 [D]` (transformers' `Dinov2LayerScale`)."""

    init_value: float

    @nn.compact
    def __call__(self, x):
        scale = self.param("lambda1", nn.initializers.constant(self.init_value), (x.shape[-1],), jnp.float32)
        return x * scale.astype(x.dtype)


class Mlp(nn.Module):
    """fc1 -> exact GELU -> fc2, hidden width int(hidden_size * mlp_ratio)."""

    config: Dinov2Config
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        hidden = gelu(dense(self.config.intermediate_size, self.dtype, "fc1")(x))
        return dense(self.config.hidden_size, self.dtype, "fc2")(hidden)


class Layer(nn.Module):
    """Pre-norm block: x + ls1(attention(norm1(x))), then x + ls2(mlp(norm2(x)))."""

    config: Dinov2Config
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        config = self.config
        normed = layer_norm(config.layer_norm_eps, "norm1")(x).astype(self.dtype)
        attended = Attention(config, self.dtype, name="attention")(normed)
        x = x + LayerScale(config.layerscale_value, name="layer_scale1")(attended)
        normed = layer_norm(config.layer_norm_eps, "norm2")(x).astype(self.dtype)
        hidden = Mlp(config, self.dtype, name="mlp")(normed)
        return x + LayerScale(config.layerscale_value, name="layer_scale2")(hidden)


class Encoder(nn.Module):
    config: Dinov2Config
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x) -> list[jax.Array]:  # -> the output of every layer
        outputs = []
        for i in range(self.config.num_hidden_layers):
            x = residual_stream_boundary(Layer(self.config, self.dtype, name=f"layer_{i}")(x))
            outputs.append(x)
        return outputs


class Dinov2Model(nn.Module):
    """`pixel_values [B, H, W, 3]` (H, W multiples of the patch size) -> `Dinov2Output`.

    One module for both of transformers' forms: `last_hidden_state` is `Dinov2Model`'s, `feature_maps` are
    `Dinov2Backbone`'s (token sequences with CLS first; the neck reshapes them). Under `jit` only what the caller
    uses is computed. Parameters are fp32; `dtype` is the compute type (layernorms and softmax in fp32).
    """

    config: Dinov2Config
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, pixel_values) -> Dinov2Output:
        config = self.config
        _, height, width, channels = pixel_values.shape
        p = config.patch_size
        if height % p or width % p or channels != 3:
            raise ArgumentError(
                f"pixel_values must be [B, H, W, 3] with H and W multiples of {p}, got {pixel_values.shape}"
            )
        x = Embeddings(config, self.dtype, name="embeddings")(pixel_values)
        hidden_states = (x, *Encoder(config, self.dtype, name="encoder")(x))
        norm = layer_norm(config.layer_norm_eps, "layernorm")  # one module: its parameters serve every call

        def final_norm(h):
            return norm(h).astype(h.dtype)

        feature_maps = tuple(
            final_norm(hidden_states[i]) if config.apply_layernorm else hidden_states[i] for i in config.out_indices
        )
        return Dinov2Output(final_norm(hidden_states[-1]), hidden_states, feature_maps)
