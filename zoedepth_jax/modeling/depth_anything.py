"""Depth Anything (transformers `DepthAnythingForDepthEstimation`): DINOv2 backbone, the DPT neck and the depth
head of `dpt.py`, configured as Depth Anything configures them.

`DepthAnythingForDepthEstimation.apply(variables, pixel_values) -> DepthAnythingOutput`.
"""

from __future__ import annotations

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from zoedepth_jax.config import DepthAnythingConfig
from zoedepth_jax.errors import ConfigError
from zoedepth_jax.modeling.dinov2 import Dinov2Model
from zoedepth_jax.modeling.dpt import DepthHead, Neck
from zoedepth_jax.modeling.layers import Dtype

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@flax.struct.dataclass
class DepthAnythingOutput:
    """`predicted_depth [B, H, W]` at the input's size: relative (affine-invariant inverse depth, larger is nearer)
    or metric (meters, in 0..max_depth), as the config's `depth_estimation_type` says. `domain_logits` is always
    None (one head, no router): it is there so that every model's output has the fields of `ZoeDepthOutput` that
    the exporters read, whichever model computed it."""

    predicted_depth: jax.Array
    domain_logits: None = None


class DepthAnythingForDepthEstimation(nn.Module):
    """Depth Anything. Input: `pixel_values [B, H, W, 3]` (normalised with the ImageNet mean and std, H and W
    multiples of the patch size, 14). Parameters are fp32; `dtype` is the compute dtype (layernorms, softmax and
    the metric sigmoid run in fp32).

    Intermediates (`backbone_stage{i}`: the backbone's layernormed outputs fed to the neck, `neck_fusion_{i}`)
    are sown into the `"intermediates"` collection: `apply_with_intermediates` in `zoedepth.py` collects them.
    """

    config: DepthAnythingConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, pixel_values: jax.Array) -> DepthAnythingOutput:
        if jnp.dtype(self.dtype) not in [jnp.dtype(d) for d in COMPUTE_DTYPES.values()]:
            raise ConfigError(f"dtype = {self.dtype!r}: expected one of {', '.join(COMPUTE_DTYPES)}")
        config = self.config
        backbone = Dinov2Model(config.backbone_config, self.dtype, name="backbone")(pixel_values)
        for i, stage in zip(config.backbone_config.out_indices, backbone.feature_maps, strict=True):
            self.sow("intermediates", f"backbone_stage{i}", stage)
        p = config.patch_size
        grid = (pixel_values.shape[1] // p, pixel_values.shape[2] // p)
        fused, _ = Neck(config.neck, self.dtype, name="neck")(list(backbone.feature_maps), grid)
        head = DepthHead(
            config.fusion_hidden_size,
            config.head_hidden_size,
            config.head_in_index,
            activation="sigmoid" if config.depth_estimation_type == "metric" else "relu",
            max_depth=float(config.max_depth),
            dtype=self.dtype,
            name="head",
        )
        depth, _ = head(fused, size=(grid[0] * p, grid[1] * p))
        return DepthAnythingOutput(depth.astype(jnp.float32))
