"""DPT neck (reassemble + fusion) and the depth head, as transformers' ZoeDepth and Depth Anything build them.

The two models share these modules and differ only in configuration (`config.NeckConfig`, the head's fields):
ZoeDepth projects the CLS token into every map and upsamples 2x in each fusion layer; Depth Anything drops the
CLS token and upsamples each fusion layer to the size of the next map. ZoeDepth's head ends in ReLU at twice the
finest map's size; Depth Anything's at the input size, in ReLU or sigmoid times a maximum depth.

Reference: transformers `models/zoedepth/modeling_zoedepth.py` (`ZoeDepthNeck`, `ZoeDepthRelativeDepthEstimationHead`)
and `models/depth_anything/modeling_depth_anything.py` (`DepthAnythingNeck`, `DepthAnythingDepthEstimationHead`).
All feature maps are NHWC.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoedepth_jax.config import NeckConfig
from zoedepth_jax.modeling.layers import Dtype, UpsampleConvTranspose, conv, dense, gelu
from zoedepth_jax.ops import resize_bilinear


class ReadoutProject(nn.Module):
    """`readout_projects.i`: Linear(2D -> D) then GELU, applied to each token concatenated with the CLS token."""

    features: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens, cls_token):  # [B, N, D], [B, D] -> [B, N, D]
        readout = jnp.broadcast_to(cls_token[:, None, :], tokens.shape)
        x = dense(self.features, self.dtype, "0")(jnp.concatenate([tokens, readout], axis=-1))
        return gelu(x)


class ReassembleLayer(nn.Module):
    """1x1 projection to `channels`, then resize by `factor` (transposed conv up, strided 3x3 conv down)."""

    channels: int
    factor: float
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):  # [B, h, w, D] -> [B, h*factor, w*factor, channels]
        x = conv(self.channels, 1, "projection", self.dtype)(x)
        if self.factor > 1:
            return UpsampleConvTranspose(self.channels, int(self.factor), self.dtype, name="resize")(x)
        if self.factor < 1:
            return conv(self.channels, 3, "resize", self.dtype, stride=round(1 / self.factor), padding=1)(x)
        return x


class ReassembleStage(nn.Module):
    config: NeckConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, hidden_states, grid):  # list of [B, 1+N, D] -> list of [B, h_i, w_i, C_i]
        config = self.config
        width = config.hidden_size
        out = []
        for i, (hidden, channels, factor) in enumerate(
            zip(hidden_states, config.neck_hidden_sizes, config.reassemble_factors, strict=True)
        ):
            cls_token, tokens = hidden[:, 0], hidden[:, 1:]
            if config.readout_type == "project":
                tokens = ReadoutProject(width, self.dtype, name=f"readout_projects_{i}")(tokens, cls_token)
            elif config.readout_type == "add":
                tokens = tokens + cls_token[:, None, :]
            feature_map = tokens.reshape(tokens.shape[0], grid[0], grid[1], width)
            out.append(ReassembleLayer(channels, factor, self.dtype, name=f"layers_{i}")(feature_map))
        return out


class PreActResidualLayer(nn.Module):
    """ReLU -> conv3x3 -> ReLU -> conv3x3, plus the input."""

    features: int
    bias: bool
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        y = conv(self.features, 3, "convolution1", self.dtype, padding=1, bias=self.bias)(nn.relu(x))
        y = conv(self.features, 3, "convolution2", self.dtype, padding=1, bias=self.bias)(nn.relu(y))
        return x + y


class FeatureFusionLayer(nn.Module):
    features: int
    bias: bool
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, residual=None, size=None):  # -> `size`, or twice the spatial size of x
        if residual is not None:
            if residual.shape != x.shape:  # odd patch grids: the strided branch rounds up
                residual = resize_bilinear(residual, x.shape[1:3], align_corners=False)
            x = x + PreActResidualLayer(self.features, self.bias, self.dtype, name="residual_layer1")(residual)
        x = PreActResidualLayer(self.features, self.bias, self.dtype, name="residual_layer2")(x)
        x = resize_bilinear(x, size or (2 * x.shape[1], 2 * x.shape[2]), align_corners=True)
        return conv(self.features, 1, "projection", self.dtype)(x)


class FeatureFusionStage(nn.Module):
    config: NeckConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, features):  # coarsest last -> fused maps, coarsest first
        config = self.config
        fused, x = [], None
        coarsest_first = features[::-1]
        for i, feature in enumerate(coarsest_first):
            layer = FeatureFusionLayer(
                config.fusion_hidden_size, config.fusion_residual_bias, self.dtype, name=f"layers_{i}"
            )
            last = i == len(coarsest_first) - 1
            size = None if last or not config.upsample_to_next_map else coarsest_first[i + 1].shape[1:3]
            x = layer(feature, size=size) if x is None else layer(x, feature, size=size)
            fused.append(x)
        return fused


class Neck(nn.Module):
    """Returns the fused maps (1/16 .. 1/2 of the input size for the released factors) and the bottleneck
    (the projected coarsest map, 1/32), which feeds the metric head."""

    config: NeckConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, hidden_states, grid):
        config = self.config
        maps = ReassembleStage(config, self.dtype, name="reassemble_stage")(hidden_states, grid)
        features = [
            conv(config.fusion_hidden_size, 3, f"convs_{i}", self.dtype, padding=1, bias=False)(m)
            for i, m in enumerate(maps)
        ]
        fused = FeatureFusionStage(config, self.dtype, name="fusion_stage")(features)
        self.sow("intermediates", "neck_bottleneck", features[-1])
        for i, f in enumerate(fused):
            self.sow("intermediates", f"neck_fusion_{i}", f)
        return fused, features[-1]


class DepthHead(nn.Module):
    """conv3x3 (C/2) -> bilinear resize (align_corners=True) -> conv3x3 + ReLU (features) -> conv1x1 -> output.

    The resize doubles the map (ZoeDepth's relative head) or goes to the `size` given (Depth Anything: the input
    size). The output is ReLU (`activation="relu"`) or sigmoid (`"sigmoid"`, in fp32), times `max_depth` when set.
    Returns `depth [B, H, W]` and the features `[B, H, W, hidden_size]`.
    """

    fusion_hidden_size: int
    hidden_size: int  # channels of the features (ZoeDepth's num_relative_features, Depth Anything's head_hidden_size)
    head_in_index: int = -1
    activation: str = "relu"
    max_depth: float | None = None
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, fused, size=None):
        x = fused[self.head_in_index]
        x = conv(self.fusion_hidden_size // 2, 3, "conv1", self.dtype, padding=1)(x)
        x = resize_bilinear(x, size or (2 * x.shape[1], 2 * x.shape[2]), align_corners=True)
        features = nn.relu(conv(self.hidden_size, 3, "conv2", self.dtype, padding=1)(x))
        depth = conv(1, 1, "conv3", self.dtype)(features)[..., 0]
        depth = jax.nn.sigmoid(depth.astype(jnp.float32)) if self.activation == "sigmoid" else nn.relu(depth)
        if self.max_depth is not None:
            depth = depth * jnp.asarray(self.max_depth, depth.dtype)
        return depth, features
