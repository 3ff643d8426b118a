"""The whole model: `ZoeDepthForDepthEstimation.apply(variables, pixel_values) -> ZoeDepthOutput`."""

from __future__ import annotations

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from zoedepth_jax.config import Dinov2Config, ZoeDepthConfig
from zoedepth_jax.errors import ConfigError
from zoedepth_jax.modeling.beit import BeitBackbone
from zoedepth_jax.modeling.dinov2 import Dinov2Model
from zoedepth_jax.modeling.dpt import DepthHead, Neck
from zoedepth_jax.modeling.layers import Dtype
from zoedepth_jax.modeling.metric_head import MetricHead

ROUTINGS = ("per_image", "batch")  # see select_domain
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}  # the model's compute dtypes, by name


@flax.struct.dataclass
class ZoeDepthOutput:
    """`predicted_depth [B, H, W]` in meters at the input's size; `domain_logits [B, 2]` for ZoeD-NK, else None;
    `depth_std [B, H, W]` in meters when asked for (`with_uncertainty=True`), else None."""

    predicted_depth: jax.Array
    domain_logits: jax.Array | None = None
    depth_std: jax.Array | None = None


def select_domain(depths: jax.Array, domain_logits: jax.Array, routing: str) -> jax.Array:
    """Picks each image's depth from `depths [num_domains, B, H, W]` without leaving the device.

    "per_image": each image takes the head its own logits choose, so a batch returns what its images return
    one at a time. "batch": transformers' rule, one head for the whole batch, from the softmax of the logits
    summed over the batch (identical to "per_image" for a batch of one).
    """
    if routing == "per_image":
        domain = jnp.argmax(domain_logits, axis=-1)  # [B]
    else:
        vote = jax.nn.softmax(domain_logits.sum(axis=0), axis=-1)
        domain = jnp.broadcast_to(jnp.argmax(vote), domain_logits.shape[:1])
    return jnp.take_along_axis(depths, domain[None, :, None, None], axis=0)[0]


class ZoeDepthForDepthEstimation(nn.Module):
    """ZoeDepth for metric depth. Input: `pixel_values [B, H, W, 3]` (normalised as the image processor does,
    H and W multiples of the patch size). Parameters are fp32; `dtype` sets the compute type of the backbone,
    neck and relative head (the metric heads and router always run in fp32).

    Intermediates (backbone stages, neck maps, relative depth, bin centres) are sown into the
    `"intermediates"` collection: `model.apply(variables, x, mutable=["intermediates"])`.

    Uncertainty: `model.apply(variables, x, with_uncertainty=True)` also returns `depth_std`, the standard deviation
    of depth under each pixel's final bin distribution (the log-binomial probabilities over the last attractor
    stage's bin centres, whose mean is the depth). A separate program: the default forward computes none of it.

    Training mode: `model.apply(variables, x, deterministic=False, rngs={"dropout": key})` runs the dropout and
    drop-path rates of the BEiT config (`hidden_dropout_prob`, `attention_probs_dropout_prob`, `drop_path_rate`)
    and, for ZoeD-NK, the router's fixed dropout of 0.1, where torch's `model.train()` runs them. With all rates
    0 (a single-domain model whose BEiT rates are 0) it computes exactly the inference path.
    """

    config: ZoeDepthConfig
    dtype: Dtype = jnp.float32
    routing: str = "per_image"

    @nn.compact
    def __call__(
        self, pixel_values: jax.Array, deterministic: bool = True, with_uncertainty: bool = False
    ) -> ZoeDepthOutput:
        if self.routing not in ROUTINGS:
            raise ConfigError(f"routing = {self.routing!r}: expected one of {ROUTINGS}")
        if jnp.dtype(self.dtype) not in [jnp.dtype(d) for d in COMPUTE_DTYPES.values()]:
            raise ConfigError(f"dtype = {self.dtype!r}: expected one of {', '.join(COMPUTE_DTYPES)}")
        config = self.config
        patch = config.backbone_config.patch_size
        hidden_states = self._backbone(pixel_values, deterministic)
        grid = (pixel_values.shape[1] // patch, pixel_values.shape[2] // patch)
        fused, bottleneck = Neck(config.neck, self.dtype, name="neck")(hidden_states, grid)
        relative_head = DepthHead(
            config.fusion_hidden_size,
            config.num_relative_features,
            config.head_in_index,
            dtype=self.dtype,
            name="relative_head",
        )
        # Depth Anything's DPT head resizes to the input size; transformers' ZoeDepth head upsamples 2x.
        size = (grid[0] * patch, grid[1] * patch) if config.depth_anything_dpt else None
        relative_depth, relative_features = relative_head(fused, size=size)
        self.sow("intermediates", "relative_depth", relative_depth)
        depths, domain_logits = MetricHead(config, with_uncertainty, name="metric_head")(
            relative_features, relative_depth, bottleneck, fused, deterministic
        )
        depths, stds = depths if with_uncertainty else (depths, None)  # each [num_domains, B, H, W]
        if domain_logits is None:
            return ZoeDepthOutput(depths[0], None, None if stds is None else stds[0])
        chosen = select_domain(depths, domain_logits, self.routing)
        chosen_std = None if stds is None else select_domain(stds, domain_logits, self.routing)
        return ZoeDepthOutput(chosen, domain_logits, chosen_std)

    def _backbone(self, pixel_values, deterministic: bool) -> list[jax.Array]:
        """The token sequences `[B, 1+N, D]` the neck reads: BEiT's layer outputs, or DINOv2's through its final
        layernorm (transformers' `Dinov2Backbone` with `apply_layernorm`), sown as `backbone_stage{i}`."""
        backbone = self.config.backbone_config
        if not isinstance(backbone, Dinov2Config):
            return BeitBackbone(backbone, self.dtype, name="backbone")(pixel_values, deterministic)
        rates = (backbone.drop_path_rate, backbone.hidden_dropout_prob, backbone.attention_probs_dropout_prob)
        if not deterministic and any(rates):
            raise ConfigError(
                "backbone_config: the DINOv2 backbone runs without dropout and drop-path; set their rates to 0 "
                "to train with it"
            )
        stages = list(Dinov2Model(backbone, self.dtype, name="backbone")(pixel_values).feature_maps)
        for i, stage in zip(backbone.out_indices, stages, strict=True):
            self.sow("intermediates", f"backbone_stage{i}", stage)
        return stages


def apply_with_intermediates(model: ZoeDepthForDepthEstimation, variables, pixel_values):
    """Runs the model and returns `(output, {name: array})` with every sown intermediate, e.g.
    `backbone_stage24`, `neck_fusion_3`, `relative_depth`, `bin_centers_nyu`, `seed_bin_centers_kitti`."""
    output, state = model.apply(variables, pixel_values, mutable=["intermediates"])
    flat = {}
    for path, value in jax.tree_util.tree_flatten_with_path(
        state["intermediates"], is_leaf=lambda v: isinstance(v, tuple)
    )[0]:
        name = path[-1].key
        flat[name] = value[0]
    return output, flat
