"""The losses ZoeDepth is trained with: the scale-invariant log loss on metric depth and, for ZoeD-NK, the router's
domain cross-entropy.

Reference: isl-org ZoeDepth `zoedepth/trainers/loss.py` (`SILogLoss`) and `zoedepth/trainers/zoedepth_nk_trainer.py`
(the domain loss). Both are pure functions of arrays, valid under `jit`, `vmap` and `grad`, and computed in fp32
whatever the model's compute dtype (the original turns autocast off for the SILog loss).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from zoedepth_jax.ops import resize_bilinear

SILOG_BETA = 0.15  # the weight of the squared mean log error: Dg = Var(g) + beta * mean(g)^2
SILOG_SCALE = 10.0  # the loss is SILOG_SCALE * sqrt(Dg)
LOG_EPSILON = 1e-7  # added to prediction and target inside the logarithms


def resize_prediction(predicted_depth: jax.Array, size: tuple[int, int]) -> jax.Array:
    """`[B, h, w]` -> `[B, *size]`, bilinear with `align_corners=True` (the original's resize to the target);
    returned as is when the size already matches."""
    if predicted_depth.shape[1:] == tuple(size):
        return predicted_depth
    return resize_bilinear(predicted_depth[..., None], tuple(size), align_corners=True)[..., 0]


def silog_loss(predicted_depth: jax.Array, target: jax.Array, mask: jax.Array, beta: float = SILOG_BETA) -> jax.Array:
    """ZoeDepth's SILog loss, a scalar: `10 * sqrt(Var(g) + beta * mean(g)^2)` with
    `g = log(prediction + 1e-7) - log(target + 1e-7)` over the valid pixels of the whole batch.

    Args:
        predicted_depth: `[B, h, w]` meters; resized to the target's size first when it differs.
        target: `[B, H, W]` ground-truth meters. Values outside `mask` are never read (zeros and NaNs are fine).
        mask: `[B, H, W]` bool, the valid target pixels. At least two must be set.
        beta: 0.15 in ZoeDepth.

    As the original: the valid pixels of all images are pooled into one set (the loss is not averaged per image),
    the variance is the unbiased one (divided by n - 1, `torch.var`'s default), and the prediction is resized
    with bilinear `align_corners=True`. The original resizes only when the widths differ (and fails when only
    the heights do); here any size difference is resized. Masked-out pixels get no gradient.
    """
    predicted_depth = resize_prediction(predicted_depth.astype(jnp.float32), target.shape[1:])
    # Masked-out pixels are replaced before the logarithm, so that invalid targets (0, NaN) cannot make NaN
    # gradients through the `where`.
    prediction = jnp.where(mask, predicted_depth, 1.0)
    target = jnp.where(mask, target.astype(jnp.float32), 1.0)
    g = jnp.where(mask, jnp.log(prediction + LOG_EPSILON) - jnp.log(target + LOG_EPSILON), 0.0)
    count = jnp.sum(mask, dtype=jnp.float32)
    mean = jnp.sum(g) / count
    variance = jnp.sum(jnp.where(mask, (g - mean) ** 2, 0.0)) / (count - 1)
    return SILOG_SCALE * jnp.sqrt(variance + beta * mean**2)


def domain_cross_entropy(domain_logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean cross-entropy of the router's `domain_logits [B, 2]` against `labels [B]` (0 = nyu, 1 = kitti, see
    `domains.DOMAIN_LABELS`), torch's `nn.CrossEntropyLoss()` as the original NK trainer applies it. A scalar, fp32."""
    log_probabilities = jax.nn.log_softmax(domain_logits.astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(log_probabilities, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
    return -jnp.mean(picked)
