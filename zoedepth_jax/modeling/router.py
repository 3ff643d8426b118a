"""ZoeD-NK's domain router: a small post-norm transformer over the bottleneck's pixels and an MLP classifier
on its first token, giving one logit per domain (NYU, KITTI).

Reference: transformers `ZoeDepthPatchTransformerEncoder`, `ZoeDepthTransformerEncoderLayer`, `ZoeDepthMLPClassifier`.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoedepth_jax.config import ZoeDepthConfig
from zoedepth_jax.modeling.layers import conv, layer_norm

# transformers runs exactly this many encoder layers, whatever `num_patch_transformer_layers` says.
ROUTER_LAYERS = 4
# Dropout of the router's encoder layers in training mode: transformers' constructor default, as torch's
# nn.TransformerEncoderLayer in the original. No config field sets it.
ROUTER_DROPOUT = 0.1
TORCH_LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's default, which the router's norms use


def sinusoidal_positions(length: int, dim: int) -> jnp.ndarray:
    """`[length, dim]`: sines in the first half of the channels, cosines in the second (not interleaved)."""
    position = jnp.arange(length, dtype=jnp.float32)[:, None]
    frequency = jnp.exp(jnp.arange(0, dim, 2, dtype=jnp.float32) * (-math.log(10000.0) / dim))[None, :]
    angle = position * frequency
    return jnp.concatenate([jnp.sin(angle), jnp.cos(angle)], axis=1)


class MultiheadAttention(nn.Module):
    num_heads: int

    @nn.compact
    def __call__(self, x, deterministic: bool = True):  # [B, T, E]
        batch, tokens, width = x.shape
        head_dim = width // self.num_heads

        def project(name):
            return nn.Dense(width, name=name)(x).reshape(batch, tokens, self.num_heads, head_dim).transpose(0, 2, 1, 3)

        query, key, value = project("query"), project("key"), project("value")
        scores = jnp.einsum("bhqd,bhkd->bhqk", query, key) / math.sqrt(head_dim)
        weights = nn.Dropout(ROUTER_DROPOUT, name="dropout")(jax.nn.softmax(scores, axis=-1), deterministic)
        context = jnp.einsum("bhqk,bhkd->bhqd", weights, value)
        return nn.Dense(width, name="out_proj")(context.transpose(0, 2, 1, 3).reshape(batch, tokens, width))


class TransformerEncoderLayer(nn.Module):
    """Post-norm encoder layer with ReLU feed-forward. In training mode (`deterministic=False`) dropout at
    ROUTER_DROPOUT acts where torch's layer has it: attention weights, both residual branches, the hidden layer."""

    num_heads: int
    intermediate_size: int

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        def dropout(name, y):
            return nn.Dropout(ROUTER_DROPOUT, name=name)(y, deterministic)

        attended = MultiheadAttention(self.num_heads, name="self_attn")(x, deterministic)
        x = layer_norm(TORCH_LAYER_NORM_EPS, "norm1")(x + dropout("dropout1", attended))
        hidden = dropout("dropout", nn.relu(nn.Dense(self.intermediate_size, name="linear1")(x)))
        y = nn.Dense(x.shape[-1], name="linear2")(hidden)
        return layer_norm(TORCH_LAYER_NORM_EPS, "norm2")(x + dropout("dropout2", y))


class PatchTransformerEncoder(nn.Module):
    config: ZoeDepthConfig

    @nn.compact
    def __call__(self, x, deterministic: bool = True):  # [B, h, w, C] -> [B, 1 + h*w, E]
        config = self.config
        embeddings = conv(config.patch_transformer_hidden_size, 1, "embedding_convPxP", jnp.float32)(x)
        batch, _, _, width = embeddings.shape
        embeddings = embeddings.reshape(batch, -1, width)
        # A zero token in front accumulates the global summary the classifier reads.
        embeddings = jnp.pad(embeddings, ((0, 0), (1, 0), (0, 0)))
        embeddings = embeddings + sinusoidal_positions(embeddings.shape[1], width)[None]
        for i in range(ROUTER_LAYERS):
            layer = TransformerEncoderLayer(
                config.patch_transformer_num_attention_heads,
                config.patch_transformer_intermediate_size,
                name=f"transformer_encoder_{i}",
            )
            embeddings = layer(embeddings, deterministic)
        return embeddings


class MLPClassifier(nn.Module):
    num_domains: int

    @nn.compact
    def __call__(self, x):  # [B, E] -> [B, num_domains]
        x = nn.relu(nn.Dense(x.shape[-1], name="linear1")(x))
        return nn.Dense(self.num_domains, name="linear2")(x)
