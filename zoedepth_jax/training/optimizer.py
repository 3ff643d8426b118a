"""The optimizer of the original ZoeDepth recipe in optax: AdamW over parameter groups with their own learning
rates, a one-cycle schedule (learning rate and AdamW's beta1) and clipping of the global gradient norm.

Reference: isl-org ZoeDepth `trainers/base_trainer.py` (`init_optimizer`, `init_scheduler`), `models/zoedepth*/
zoedepth*_v1.py` (`get_lr_params`) and the trainers' `clip_grad_norm_` before each step; for a DINOv2 backbone,
Depth Anything's `metric_depth` copy of that trainer (`models/zoedepth/zoedepth_v1.py` and
`models/base_models/depth_anything.py`), whose groups differ (see `parameter_group`); torch's `AdamW`,
`OneCycleLR` and `clip_grad_norm_`, whose arithmetic is reproduced here (the tests step both side by side).
As in torch: weight decay applies to every parameter (biases and norms too, as the original's groups do), the
step that uses a schedule value k is the k-th (0-based), and beta1 follows the one-cycle curve when
`cycle_momentum` (Adam's bias correction uses the current beta1, as torch's does). Differences: schedules are
evaluated in fp32 (torch: float64, ~1e-7 relative), and past `total_steps` the last value holds (torch raises).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from zoedepth_jax.errors import ArgumentError
from zoedepth_jax.training.config import TrainConfig

# The four groups of the original's `get_lr_params`, named after what they hold here ("relative_position": the
# position encodings, BEiT's relative-position tables or DINOv2's position embeddings).
GROUPS = ("encoder", "relative_position", "decoder", "head")
BACKBONES = ("beit", "dinov2")
# The DINOv2 backbone's position-embedding table; the BEiT backbone has none (its positions are relative).
DINOV2_POSITION_EMBEDDINGS = ("backbone", "embeddings", "position_embeddings")
TORCH_CLIP_EPSILON = 1e-6  # torch's clip_grad_norm_ divides by (norm + 1e-6)


def parameter_group(path: tuple[str, ...], backbone: str = "beit") -> str:
    """The group of the parameter at `path` (e.g. `("backbone", "encoder", "layer_0", ..., "kernel")`) of a
    ZoeDepth model on a `backbone` of BACKBONES.

    BEiT (isl-org ZoeDepth): the original groups MiDaS's modules: `pretrained` (the BEiT and the reassemble stage,
    here `backbone` and `neck/reassemble_stage`) is the encoder, except the parameters named `relative_position*`
    (the BEiT's relative-position tables), which have a group of their own; `scratch` (the neck's convs and fusion
    stage and the relative head) is the decoder; everything else (`metric_head`: bins, attractors, log-binomial,
    router) is the head.

    DINOv2 (Depth Anything's metric_depth trainer, the same `get_lr_params` over its DPT_DINOv2): `pretrained` is
    the DINOv2 alone, the encoder, except its parameters named `pos_embed` (here `position_embeddings`), which take
    the position-encoding group as BEiT's relative-position tables do; the reassemble stage belongs to its
    `depth_head` with the neck's convs, fusion stage and relative head, the decoder; the metric head is the head.
    """
    if backbone not in BACKBONES:
        raise ArgumentError(f"backbone = {backbone!r}: expected one of {BACKBONES}")
    if path[0] == "backbone":
        positional = "position_embeddings" if backbone == "dinov2" else "relative_position"
        return "relative_position" if any(part.startswith(positional) for part in path) else "encoder"
    if path[:2] == ("neck", "reassemble_stage"):
        return "encoder" if backbone == "beit" else "decoder"
    if path[0] in ("neck", "relative_head"):
        return "decoder"
    if path[0] == "metric_head":
        return "head"
    raise ArgumentError(f"parameter {'/'.join(path)} belongs to no ZoeDepth parameter group")


def parameter_labels(params: Mapping) -> dict:
    """A tree shaped like `params` holding each leaf's group name (`parameter_group`), the backbone told by the
    parameters themselves (DINOv2's position-embedding table). `params` may also be an NNX state of the
    parameters (`training.nnx`), whose leaves sit inside `nnx.Param`s: only the dictionary keys name a group."""

    def names(path) -> tuple[str, ...]:
        return tuple(k.key for k in path if hasattr(k, "key"))

    paths = {names(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]}
    backbone = "dinov2" if DINOV2_POSITION_EMBEDDINGS in paths else "beit"
    return jax.tree_util.tree_map_with_path(lambda path, _: parameter_group(names(path), backbone), params)


def group_learning_rates(config: TrainConfig) -> dict[str, float]:
    """The peak learning rate of each group."""
    if config.same_lr:
        return dict.fromkeys(GROUPS, config.learning_rate)
    return {
        "encoder": config.learning_rate / config.encoder_lr_factor,
        "relative_position": config.learning_rate / config.pos_enc_lr_factor,
        "decoder": config.learning_rate / config.midas_lr_factor,
        "head": config.learning_rate,
    }


def one_cycle(config: TrainConfig, start: float, peak: float, end: float) -> Callable[[jax.Array], jax.Array]:
    """torch's two-phase OneCycleLR curve as a function of the step: cosine from `start` to `peak` until step
    `pct_start * total_steps - 1`, then cosine from `peak` to `end` at step `total_steps - 1`. Equal to torch's
    at every step it accepts (0..total_steps); later steps keep the value of step `total_steps`, where torch
    raises. Computed in fp32 (torch in float64: they differ by rounding, ~1e-7 relative)."""
    warmup_end = config.pct_start * config.total_steps - 1
    last = config.total_steps - 1

    def cosine(a, b, fraction):  # torch's b + (a - b) / 2 * (cos(pi f) + 1), as a weighted sum: no cancellation
        weight = (jnp.cos(jnp.pi * fraction) + 1) / 2
        return a * weight + b * (1 - weight)

    def schedule(step):
        step = jnp.minimum(jnp.asarray(step, jnp.float32), config.total_steps)
        rising = cosine(start, peak, step / warmup_end)
        falling = cosine(peak, end, (step - warmup_end) / (last - warmup_end))
        return jnp.where(step <= warmup_end, rising, falling)

    return schedule


def learning_rate_schedule(config: TrainConfig, peak: float) -> Callable[[jax.Array], jax.Array]:
    """A group's learning rate: from `peak / div_factor` up to `peak`, then down to that over final_div_factor."""
    initial = peak / config.div_factor
    return one_cycle(config, initial, peak, initial / config.final_div_factor)


def beta1_schedule(config: TrainConfig) -> Callable[[jax.Array], jax.Array] | float:
    """AdamW's beta1: torch's OneCycleLR cycles it opposite to the learning rate when `cycle_momentum`."""
    if not config.cycle_momentum:
        return config.beta1
    return one_cycle(config, config.max_momentum, config.base_momentum, config.max_momentum)


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
    """torch's `clip_grad_norm_`: every gradient times min(1, max_norm / (global L2 norm + 1e-6)). (optax's
    `clip_by_global_norm` scales by max_norm / norm, without the 1e-6.)"""

    def update(updates, state, params=None):
        del params
        scale = jnp.minimum(1.0, max_norm / (optax.tree.norm(updates) + TORCH_CLIP_EPSILON))
        return jax.tree_util.tree_map(lambda g: g * scale.astype(g.dtype), updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


@functools.lru_cache(maxsize=16)
def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """Gradient clipping over all parameters, then per group AdamW (decoupled weight decay on every parameter,
    as torch's AdamW) with the group's one-cycle learning rate and the cycled beta1.

    Each group's hyper-parameters are injected (`optax.inject_hyperparams`), so the optimizer state records the
    learning rate and beta1 that the last step used. Groups follow `parameter_group`. The same config gives the
    same (stateless) object: a train state is a static part of a jitted step's signature, so a run resumed in
    the same process reuses the compiled step.
    """
    rates = group_learning_rates(config)
    adamw = optax.inject_hyperparams(optax.adamw)
    groups = {
        name: adamw(
            learning_rate=learning_rate_schedule(config, rates[name]),
            b1=beta1_schedule(config),
            b2=config.beta2,
            eps=config.epsilon,
            weight_decay=config.weight_decay,
        )
        for name in GROUPS
    }
    per_group = optax.multi_transform(groups, parameter_labels)
    if config.clip_grad <= 0:
        return per_group
    return optax.chain(clip_by_global_norm(config.clip_grad), per_group)
