"""The NNX module (`training.nnx`): outputs and gradients identical to the Linen model's under `jit`, the
parameters back as a Linen tree, and an optax step through `nnx.Optimizer` equal to the train state's."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from zoedepth_jax import ZoeDepthForDepthEstimation
from zoedepth_jax.config import tiny_config
from zoedepth_jax.training.losses import silog_loss
from zoedepth_jax.training.nnx import to_linen_variables, to_nnx
from zoedepth_jax.training.optimizer import parameter_labels


def random_variables(model, input_shape, seed=0):
    """Parameters of the model's shapes drawn on the host (no compiled init): kernels and tables N(0, 0.02),
    norm scales 1, biases 0."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(input_shape))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = path[-1].key
        if name == "scale":
            return jnp.ones(leaf.shape, leaf.dtype)
        if name == "bias":
            return jnp.zeros(leaf.shape, leaf.dtype)
        return jnp.asarray(0.02 * rng.standard_normal(leaf.shape), leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def _equal_trees(a, b) -> bool:
    same = jax.tree_util.tree_map(lambda x, y: bool(np.array_equal(x, y)), a, b)
    return jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b) and all(jax.tree_util.tree_leaves(same))


def test_nnx_module_computes_what_the_linen_model_computes():
    model = ZoeDepthForDepthEstimation(tiny_config())
    rng = np.random.default_rng(0)
    pixel_values = jnp.asarray(rng.standard_normal((2, 32, 32, 3)), jnp.float32)
    target = jnp.asarray(rng.uniform(1, 5, (2, 32, 32)), jnp.float32)
    variables = random_variables(model, pixel_values.shape)
    module = to_nnx(model, variables)
    assert isinstance(module, nnx.Module)
    assert _equal_trees(to_linen_variables(module), dict(variables))

    # Under jit, the module computes what the Linen model computes, bit for bit: its forward pass, and NNX's
    # value_and_grad of a loss, trace to the very programs Linen's do, over the same parameter tree. (Compared
    # as programs: compiling both would take long on a CPU.) Without random streams (no dropout), the module's
    # program holds no key bookkeeping, which jit drops anyway.
    graphdef, state = nnx.split(to_nnx(model, variables, rngs=nnx.Rngs()))
    linen_forward = jax.make_jaxpr(lambda v: model.apply(v, pixel_values).predicted_depth)(variables)
    nnx_forward = jax.make_jaxpr(lambda s: nnx.merge(graphdef, s)(pixel_values).predicted_depth)(state)
    assert str(nnx_forward.jaxpr) == str(linen_forward.jaxpr)
    mask = jnp.ones(target.shape, bool)

    def linen_loss(params):
        return silog_loss(model.apply({"params": params}, pixel_values).predicted_depth, target, mask)

    def nnx_loss(state):
        return nnx.value_and_grad(lambda m: silog_loss(m(pixel_values).predicted_depth, target, mask))(
            nnx.merge(graphdef, state)
        )

    linen_program = jax.make_jaxpr(jax.value_and_grad(linen_loss))(variables["params"])
    nnx_program = jax.make_jaxpr(nnx_loss)(state)
    assert str(nnx_program.jaxpr) == str(linen_program.jaxpr)
    assert _equal_trees(nnx.to_pure_dict(state), variables["params"])  # the program's inputs, in the same order

    # The optimizer's parameter groups read the NNX state as they read the Linen tree, so that
    # `nnx.Optimizer(module, make_optimizer(config), wrt=nnx.Param)` trains with the original recipe.
    labels = nnx.to_pure_dict(parameter_labels(nnx.state(module, nnx.Param)))
    assert labels == parameter_labels(variables["params"])
    assert {"encoder", "relative_position", "decoder", "head"} == set(jax.tree_util.tree_leaves(labels))
