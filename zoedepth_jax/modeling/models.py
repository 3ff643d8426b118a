"""The whole models by config: `model_for(config)` builds the Flax module a config describes."""

from __future__ import annotations

import jax.numpy as jnp

from zoedepth_jax.config import DepthAnythingConfig, ZoeDepthConfig
from zoedepth_jax.errors import ConfigError
from zoedepth_jax.modeling.depth_anything import DepthAnythingForDepthEstimation
from zoedepth_jax.modeling.zoedepth import ZoeDepthForDepthEstimation

DepthModel = ZoeDepthForDepthEstimation | DepthAnythingForDepthEstimation


def model_for(
    config: ZoeDepthConfig | DepthAnythingConfig, dtype=jnp.float32, routing: str = "per_image"
) -> DepthModel:
    """The model of `config`, computing in `dtype`. `routing` applies to ZoeDepth with two metric heads (ZoeD-NK);
    Depth Anything has one head and takes only the default."""
    if isinstance(config, ZoeDepthConfig):
        return ZoeDepthForDepthEstimation(config, dtype=dtype, routing=routing)
    if isinstance(config, DepthAnythingConfig):
        if routing != "per_image":
            raise ConfigError(f"routing = {routing!r}: Depth Anything has a single head, there is nothing to route")
        return DepthAnythingForDepthEstimation(config, dtype=dtype)
    raise ConfigError(f"no model for a {type(config).__name__}")


def is_multi_domain(model: DepthModel) -> bool:
    """Whether `model` has several metric heads and a router (ZoeD-NK), so that its output carries
    `domain_logits [B, num_domains]`; every other model's `domain_logits` is None."""
    return isinstance(model, ZoeDepthForDepthEstimation) and model.config.is_multi_domain
