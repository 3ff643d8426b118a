"""Storing parameters in the compute dtype where the model only ever uses them in it.

A model with `dtype=bfloat16` runs its linear layers and convolutions in bf16 from fp32 parameters: every
forward converts ~300M weights to bf16 before using them (a noticeable share of a CPU forward) and
keeps the fp32 copies in memory. Converting those parameters once, at load, gives bit-identical outputs (the
same conversion, done earlier) in less time and half their memory.

Which parameters qualify is read off the traced model rather than listed by name: a parameter is stored in the
compute dtype when every use of it in the model's jaxpr is a conversion to that dtype. LayerNorm parameters,
the relative-position tables, the metric heads and the router (all used in fp32) keep fp32 whatever the code
around them becomes. This is for inference: training keeps fp32 parameters (mixed precision computes in bf16
from fp32 weights, so that updates are not rounded away).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from zoedepth_jax.modeling.models import DepthModel


def _used_only_as(jaxpr, dtype) -> list[bool]:
    """For each input of `jaxpr`: is every use a `convert_element_type` to `dtype` (and is it used at all)?"""
    uses = {id(var): [] for var in jaxpr.invars}
    for equation in jaxpr.eqns:
        for var in equation.invars:
            if id(var) in uses:
                uses[id(var)].append(equation)
    outputs = {id(var) for var in jaxpr.outvars}
    return [
        bool(uses[id(var)])
        and id(var) not in outputs
        and all(
            eq.primitive.name == "convert_element_type" and jnp.dtype(eq.params["new_dtype"]) == jnp.dtype(dtype)
            for eq in uses[id(var)]
        )
        for var in jaxpr.invars
    ]


def parameter_dtypes(model: DepthModel, params) -> dict:
    """The dtype each parameter is best stored in for `model`: `model.dtype` where every use of it is a conversion
    to that dtype, else fp32. `params`: the params tree (arrays or `jax.ShapeDtypeStruct`s; only shapes are read).
    """
    as_fp32 = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, jnp.float32), params)
    if jnp.dtype(model.dtype) == jnp.float32:
        return jax.tree_util.tree_map(lambda _: jnp.dtype(jnp.float32), as_fp32)
    patch = model.config.backbone_config.patch_size
    pixels = jax.ShapeDtypeStruct((1, 2 * patch, 2 * patch, 3), jnp.float32)  # uses do not depend on the size
    jaxpr = jax.make_jaxpr(lambda p, x: model.apply({"params": p}, x))(as_fp32, pixels).jaxpr
    leaves, treedef = jax.tree_util.tree_flatten(as_fp32)
    convertible = _used_only_as(jaxpr, model.dtype)[: len(leaves)]
    dtypes = [jnp.dtype(model.dtype) if ok else jnp.dtype(jnp.float32) for ok in convertible]
    return jax.tree_util.tree_unflatten(treedef, dtypes)


def cast_to_compute_dtype(model: DepthModel, variables: dict) -> dict:
    """`variables` with every fp32 parameter that `model` only uses in `model.dtype` stored in that dtype.

    Returns `variables` unchanged for an fp32 model. The model's outputs are bit-identical either way.
    """
    if jnp.dtype(model.dtype) == jnp.float32:
        return variables
    dtypes = parameter_dtypes(model, variables["params"])
    params = jax.tree_util.tree_map(
        lambda leaf, dtype: leaf.astype(dtype) if jnp.dtype(leaf.dtype) == jnp.float32 else leaf,
        variables["params"],
        dtypes,
    )
    return {**variables, "params": params}
