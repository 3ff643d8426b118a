"""ZoeDepth as a Flax NNX module, through `flax.nnx.bridge`, for code written in NNX.

    from flax import nnx
    from zoedepth_jax import from_pretrained
    from zoedepth_jax.training.nnx import to_nnx, to_linen_variables

    model, variables = from_pretrained("Intel/zoedepth-nyu")
    module = to_nnx(model, variables)                 # an nnx.Module holding the parameters
    depth = nnx.jit(lambda m, x: m(x).predicted_depth)(module, pixel_values)
    grads = nnx.grad(lambda m: loss(m(pixel_values, deterministic=False)))(module)   # an nnx.State
    optimizer = nnx.Optimizer(module, make_optimizer(config), wrt=nnx.Param)       # optax, as in `step`
    save_pretrained("out", model, to_linen_variables(module))

The module is `nnx.bridge.ToNNX` around the Linen `ZoeDepthForDepthEstimation`: a call runs the Linen model's
`apply` on the module's variables, so outputs (and gradients) are those of `model.apply(variables, ...)`, bit for
bit under the same `jit`. Call arguments are the Linen model's (`deterministic`, `with_uncertainty`). The
parameters sit as `nnx.Param`s under the Linen names (`module.backbone["encoder"]["layer_0"]...`); the
parameter tree of the NNX state (`nnx.to_pure_dict(nnx.state(module, nnx.Param))`) is the Linen `params` tree, so
optimizer states, parameter groups (`optimizer.parameter_labels`) and checkpoints carry over unchanged.
Training mode draws dropout from the module's `nnx.Rngs` "dropout" stream (`rngs`), which advances at each call.
"""

from __future__ import annotations

from collections.abc import Mapping

from flax import nnx
from flax.nnx.bridge import variables as bridge_variables

from zoedepth_jax.errors import ArgumentError
from zoedepth_jax.modeling.zoedepth import ZoeDepthForDepthEstimation


def to_nnx(model: ZoeDepthForDepthEstimation, variables: Mapping, rngs: nnx.Rngs | None = None) -> nnx.bridge.ToNNX:
    """An NNX module that holds `variables` (`{"params": ...}`, as `from_pretrained` returns them) and runs
    `model`. `rngs`: the streams training mode draws from (default: a "dropout" stream seeded with 0).

    Unlike `ToNNX(...).lazy_init(x)`, nothing is initialised or traced: the given parameters are placed directly.
    """
    if "params" not in variables:
        raise ArgumentError(f"variables must hold 'params' (from_pretrained's form), got {sorted(variables)}")
    module = nnx.bridge.ToNNX(model, rngs=rngs if rngs is not None else nnx.Rngs(dropout=0))
    # The bridge's own conversion: params become nnx.Param attributes named after the top-level Linen modules.
    for name, value in bridge_variables.linen_vars_to_nnx_attrs(dict(variables)).items():
        setattr(module, name, nnx.data(value))
    return module


def to_linen_variables(module: nnx.bridge.ToNNX) -> dict:
    """`{"params": ...}` of an NNX module made by `to_nnx` (after training, say): what `model.apply` and
    `save_pretrained` take."""
    return {"params": nnx.to_pure_dict(nnx.state(module, nnx.Param))}
