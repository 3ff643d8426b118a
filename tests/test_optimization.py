"""The optimizer against torch: OneCycleLR's learning rates and beta1, and AdamW steps with the original's
parameter groups and gradient clipping, side by side; parameter groups as the original draws them."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import reference
import torch
import torch_recipe
from tolerances import OPTIMIZER_ABS

from zoedepth_jax.config import ZoeDepthConfig
from zoedepth_jax.errors import ConfigError
from zoedepth_jax.modeling.zoedepth import ZoeDepthForDepthEstimation
from zoedepth_jax.training.config import TrainConfig
from zoedepth_jax.training.optimizer import (
    GROUPS,
    beta1_schedule,
    learning_rate_schedule,
    make_optimizer,
    parameter_labels,
)

# One parameter per group, at paths the model has (shapes small).
TOY_PARAMS = {
    "backbone": {
        "encoder": {
            "layer_0": {
                "attention": {
                    "attention": {
                        "query": {"kernel": (3, 4)},
                        "relative_position_bias": {"relative_position_bias_table": (5, 2)},
                    }
                }
            }
        }
    },
    "neck": {"reassemble_stage": {"layers_0": {"projection": {"kernel": (1, 1, 2, 3)}}}, "convs_0": {"kernel": (3, 2)}},
    "relative_head": {"conv3": {"bias": (2,)}},
    "metric_head": {"conv2": {"kernel": (4, 4), "bias": (4,)}},
}


@pytest.mark.parametrize("div_factor", [1.0, 25.0])
def test_one_cycle_matches_torch(div_factor):
    config = TrainConfig(total_steps=20, div_factor=div_factor)
    tensor = torch.zeros(1, requires_grad=True)
    optimizer, scheduler = torch_recipe.optimizer_and_scheduler({("metric_head", "x"): tensor}, config)
    lr, beta1 = learning_rate_schedule(config, config.learning_rate), beta1_schedule(config)
    for step in range(config.total_steps + 1):  # torch accepts one step past the last
        group = optimizer.param_groups[0]
        assert float(lr(step)) == pytest.approx(group["lr"], rel=1e-6, abs=1e-12), step
        assert float(beta1(step)) == pytest.approx(group["betas"][0], rel=1e-6), step
        optimizer.step()
        if step < config.total_steps:
            scheduler.step()
    # Past the end, torch raises; here the value of step total_steps holds.
    assert float(lr(config.total_steps + 5)) == float(lr(config.total_steps))


@pytest.mark.parametrize("same_lr", [False, True])
def test_optimizer_steps_match_torch(same_lr):
    """Ten AdamW steps over the four groups, with gradients large enough to be clipped, from the same start."""
    config = TrainConfig(total_steps=10, same_lr=same_lr, learning_rate=1e-2, weight_decay=0.1)
    rng = np.random.default_rng(0)
    shapes = {
        tuple(k.key for k in path): shape
        for path, shape in jax.tree_util.tree_flatten_with_path(TOY_PARAMS, is_leaf=lambda x: isinstance(x, tuple))[0]
    }
    start = {path: rng.normal(size=shape).astype(np.float32) for path, shape in shapes.items()}
    tensors = {path: torch.tensor(value, requires_grad=True) for path, value in start.items()}
    optimizer, scheduler = torch_recipe.optimizer_and_scheduler(tensors, config)

    params = _tree({path: jnp.asarray(value) for path, value in start.items()})
    tx = make_optimizer(config)
    opt_state = tx.init(params)
    update = jax.jit(tx.update)
    for _ in range(config.total_steps):
        grads = {path: rng.normal(size=shape).astype(np.float32) for path, shape in shapes.items()}
        for path, tensor in tensors.items():
            tensor.grad = torch.from_numpy(grads[path].copy())
        torch.nn.utils.clip_grad_norm_(list(tensors.values()), config.clip_grad)
        optimizer.step()
        scheduler.step()
        updates, opt_state = update(_tree({p: jnp.asarray(g) for p, g in grads.items()}), opt_state, params)
        params = optax.apply_updates(params, updates)
    for path, tensor in tensors.items():
        ours = np.asarray(_get(params, path))
        np.testing.assert_allclose(ours, tensor.detach().numpy(), rtol=0, atol=OPTIMIZER_ABS, err_msg=str(path))
        assert np.abs(ours - start[path]).max() > 1e-3, "the parameters moved"


def _tree(flat: dict) -> dict:
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return tree


def _get(tree, path):
    for key in path:
        tree = tree[key]
    return tree


# The original's groups (get_lr_params), as patterns over our parameter paths, first match wins. The original
# module behind each is in the comment (names as in tests/reference.py's map): B = core.core.pretrained.model,
# P = core.core.pretrained, S = core.core.scratch; "head" is every ZoeDepth module outside `core`.
ORIGINAL_GROUPS = [
    (r"^backbone/.*relative_position", "relative_position"),  # B.blocks.*.attn.relative_position_bias_table
    (r"^backbone/", "encoder"),  # the rest of B
    (r"^neck/reassemble_stage/", "encoder"),  # P.act_postprocess{1..4}: in `pretrained` too
    (r"^neck/(convs_\d|fusion_stage)/", "decoder"),  # S.layer*_rn, S.refinenet*
    (r"^relative_head/", "decoder"),  # S.output_conv
    (r"^metric_head/", "head"),  # conv2, seed regressor(s), projectors, attractors, log-binomial(s), router
]


@pytest.mark.parametrize("variant", ["nyu", "nyu-kitti"])
def test_parameter_groups_follow_the_original(variant):
    config = ZoeDepthConfig.from_dict(reference.hf_config(variant).to_dict())
    model = ZoeDepthForDepthEstimation(config)
    params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))["params"]
    counts = dict.fromkeys(GROUPS, 0)
    for path, label in jax.tree_util.tree_flatten_with_path(parameter_labels(params))[0]:
        name = "/".join(k.key for k in path)
        expected = next(group for pattern, group in ORIGINAL_GROUPS if re.search(pattern, name))
        assert label == expected, f"{name}: {label}, the original puts it in {expected}"
        counts[label] += 1
    assert counts["relative_position"] == config.backbone_config.num_hidden_layers
    assert all(counts.values()), counts


def test_train_config_rejects_schedules_torch_cannot_run():
    TrainConfig(total_steps=2)  # warm-up ends at 0.7 * 2 - 1 = 0.4, the last step is 1: both phases exist
    with pytest.raises(ConfigError, match="pct_start"):
        TrainConfig(total_steps=3, pct_start=0.3)  # 0.3 * 3 - 1 < 0: no warm-up phase
    with pytest.raises(ConfigError, match="total_steps"):
        TrainConfig(total_steps=1)
    with pytest.raises(ConfigError, match="compute_dtype"):
        TrainConfig(total_steps=10, compute_dtype="float16")
