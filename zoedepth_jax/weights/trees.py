"""Parameter trees: nested dicts of arrays, their flat "a/b/c" names, and the check that a tree is exactly the
model's (every missing, unexpected or mis-shaped leaf listed in one error)."""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from zoedepth_jax.config import DepthAnythingConfig, ZoeDepthConfig
from zoedepth_jax.errors import CheckpointError
from zoedepth_jax.modeling.models import model_for


@functools.lru_cache(maxsize=16)
def param_shapes(config: ZoeDepthConfig | DepthAnythingConfig) -> dict:
    """The params tree of a config as `jax.ShapeDtypeStruct`s (traced once per config; callers only read it).
    The compute dtype and routing change no parameter, so the config alone decides it."""
    side = 4 * config.backbone_config.patch_size
    model = model_for(config)
    return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, side, side, 3)))["params"]


def flatten(tree: Mapping, prefix: tuple = ()) -> dict[tuple[str, ...], object]:
    flat = {}
    for name, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix + (name,)))
        else:
            flat[prefix + (name,)] = value
    return flat


def unflatten(flat: Mapping[tuple[str, ...], object]) -> dict:
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = value
    return tree


def problems_message(source: str, problems: dict[str, list[str]]) -> str:
    lines = [f"{source} does not match the model:"]
    for title, names in problems.items():
        if names:
            shown = names[:40] + ([f"... and {len(names) - 40} more"] if len(names) > 40 else [])
            lines.append(f"  {title} ({len(names)}):")
            lines.extend(f"    {name}" for name in shown)
    return "\n".join(lines)


def flatten_params(params: Mapping) -> dict[str, object]:
    """`{"backbone/encoder/layer_0/...": array}`: the key layout of Flax-native checkpoint files."""
    return {"/".join(path): value for path, value in flatten(params).items()}


def unflatten_params(flat: Mapping[str, object]) -> dict:
    return unflatten({tuple(name.split("/")): value for name, value in flat.items()})


def leaf_shapes(tree: Mapping) -> dict[str, tuple[int, ...]]:
    """`{"a/b/c": shape}` of every leaf of a tree of arrays or `jax.ShapeDtypeStruct`s."""
    return {name: tuple(leaf.shape) for name, leaf in flatten_params(tree).items()}


def check_flax_params(flat: Mapping[str, np.ndarray], target_shapes: Mapping, source: str) -> None:
    """Raises a CheckpointError listing every missing, unexpected or mis-shaped leaf of a Flax-native checkpoint."""
    targets = leaf_shapes(target_shapes)
    problems = {
        "unexpected keys": sorted(set(flat) - set(targets)),
        "mis-shaped keys": sorted(
            f"{name}: {tuple(flat[name].shape)}, model expects {tuple(targets[name])}"
            for name in set(flat) & set(targets)
            if tuple(flat[name].shape) != tuple(targets[name])
        ),
        "missing parameters": sorted(set(targets) - set(flat)),
    }
    if any(problems.values()):
        raise CheckpointError(problems_message(source, problems))
