"""Fine-tuning: the train state, the loss of a batch and a `jax.jit`-ted training step, data-parallel over a
device mesh when one is given.

    from zoedepth_jax import from_pretrained
    from zoedepth_jax.training.config import TrainConfig, check_trainable
    from zoedepth_jax.training.step import create_train_state, make_train_step

    model, variables = from_pretrained("Intel/zoedepth-nyu")
    config = TrainConfig.for_model(model.config, total_steps=10_000)
    state = create_train_state(model, variables, config)
    train_step = make_train_step(model, config)
    for batch in batches:  # {"pixel_values" [B,H,W,3], "depth" [B,H',W'] meters, "mask" [B,H',W'] bool}
        state, metrics = train_step(state, batch, jax.random.key(0))

A step, as the original trainers do it: forward in training mode (dropout and drop-path on), loss =
`silog_weight * SILog(depth)` (+ `domain_weight * cross-entropy(domain logits)` for ZoeD-NK, with
`batch["domain"]` [B] int: 0 nyu, 1 kitti), gradients, clipping, AdamW. The original's ZoeD-NK picks the head
for a batch from the summed domain logits (`routing="batch"` here); pass a model with the routing you want.
See `training.config` for what of the original recipe is not carried over.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from zoedepth_jax.errors import ArgumentError
from zoedepth_jax.modeling.layers import current_forms, traced_forms
from zoedepth_jax.modeling.zoedepth import COMPUTE_DTYPES, ZoeDepthForDepthEstimation
from zoedepth_jax.training.config import TrainConfig, check_trainable
from zoedepth_jax.training.losses import domain_cross_entropy, silog_loss
from zoedepth_jax.training.optimizer import group_learning_rates, learning_rate_schedule, make_optimizer

DATA_AXIS = "data"  # the mesh axis the batch is split along


class TrainState(train_state.TrainState):
    """`step`, `params` and `opt_state` (the arrays a checkpoint holds), with the model's `apply_fn` and the
    optimizer `tx` as static fields."""


def create_train_state(model: ZoeDepthForDepthEstimation, variables: dict, config: TrainConfig) -> TrainState:
    """Step 0: the model's parameters and a fresh optimizer state for `config`. A ConfigError for a model without a
    ZoeDepth head (`config.check_trainable`)."""
    check_trainable(model.config)
    # Equal models give equal states (a state's apply_fn and tx are static parts of a jitted step's signature),
    # so that a run resumed in the same process reuses the compiled step.
    state = TrainState.create(apply_fn=_shared(model).apply, params=variables["params"], tx=make_optimizer(config))
    return state.replace(step=jnp.zeros((), jnp.int32))  # an array (not Python's 0), as after a step


@functools.lru_cache(maxsize=8)
def _shared(model: ZoeDepthForDepthEstimation) -> ZoeDepthForDepthEstimation:
    """The first of equal models seen: bound methods of one instance compare equal, of two equal ones not."""
    return model


def batch_loss(
    model: ZoeDepthForDepthEstimation,
    params,
    batch: dict,
    config: TrainConfig,
    dropout_rng: jax.Array | None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`(loss, {"silog": ..., "domain_ce": ...})` for one batch; training mode when `dropout_rng` is given,
    else deterministic (evaluation). Losses are fp32."""
    deterministic = dropout_rng is None
    rngs = None if deterministic else {"dropout": dropout_rng}
    output = model.apply({"params": params}, batch["pixel_values"], deterministic=deterministic, rngs=rngs)
    silog = silog_loss(output.predicted_depth, batch["depth"], batch["mask"], config.silog_beta)
    loss = config.silog_weight * silog
    parts = {"silog": silog}
    if output.domain_logits is not None and config.domain_weight > 0:
        if "domain" not in batch:
            raise ArgumentError('a two-domain model trains its router: the batch needs "domain" [B] (0 nyu, 1 kitti)')
        parts["domain_ce"] = domain_cross_entropy(output.domain_logits, batch["domain"])
        loss = loss + config.domain_weight * parts["domain_ce"]
    return loss, parts


def _train_step(model, config: TrainConfig, state: TrainState, batch: dict, rng: jax.Array):
    dropout_rng = jax.random.fold_in(rng, state.step)

    def loss_fn(params):
        return batch_loss(model, params, batch, config, dropout_rng)

    (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    head_schedule = learning_rate_schedule(config, group_learning_rates(config)["head"])
    metrics = dict(parts, loss=loss, grad_norm=optax.tree.norm(grads), learning_rate=head_schedule(state.step))
    return state.apply_gradients(grads=grads), metrics


def data_mesh(devices=None) -> Mesh:
    """A one-axis mesh named "data" (the axis name `DepthEstimator` splits batches along) over `devices`
    (default: all of this process's), for data-parallel training in one process."""
    devices = jax.local_devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def make_train_step(model: ZoeDepthForDepthEstimation, config: TrainConfig, mesh: Mesh | None = None):
    """`train_step(state, batch, rng) -> (state, metrics)`, compiled once per batch shape.

    `rng` is a base key; each step draws its dropout from `fold_in(rng, state.step)`, so the same key can be
    passed every step. `metrics`: loss, silog (and domain_ce), grad_norm (before clipping), learning_rate (the
    head's, at this step). The model runs in `config.compute_dtype`.

    With a `mesh` (axis "data", see `data_mesh`), the batch is split along its first axis over the mesh's
    devices and the state is replicated on each; XLA sums the gradients across devices, so a step computes what
    it computes on one device (up to summation order). The batch size must be a multiple of the mesh size. The
    batch is a host (numpy) batch placed by this function. In a multi-process run the mesh spans every
    process's devices (`data_mesh(jax.devices())`) and each process passes its own part of the global batch
    (its share of the data, a multiple of its device count); the parts are assembled into one global batch.

    The step donates `state`: its buffers become the new state's, so the state passed in can no longer be read
    (keep a copy, e.g. `jax.tree.map(np.array, state)`, to compare before and after). A host view of the state
    that is still alive (`np.asarray` of a parameter) makes JAX copy instead of reuse, so such a view never changes
    under it.

    The step takes the model's forms in effect where it is built (`traced_forms`; by default the CPU forms on
    the CPU), whenever jit traces it. Steps are cached by (model, config, mesh, forms): building the step again
    for the same ones (a resumed run in the same process) reuses the compiled program.
    """
    model = model.clone(dtype=COMPUTE_DTYPES[config.compute_dtype])
    return _make_train_step(model, config, mesh, current_forms())


@functools.lru_cache(maxsize=8)
def _make_train_step(model: ZoeDepthForDepthEstimation, config: TrainConfig, mesh: Mesh | None, forms: str):
    def step(state, batch, rng):
        with traced_forms(forms):
            return _train_step(model, config, state, batch, rng)

    donate = (0,)  # the new state takes the old one's buffers: one copy of the state in memory, not two
    if mesh is None:
        return jax.jit(step, donate_argnums=donate)
    replicated = NamedSharding(mesh, PartitionSpec())
    split = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
    compiled = jax.jit(
        step, in_shardings=(replicated, split, replicated), out_shardings=replicated, donate_argnums=donate
    )
    local_devices = sum(device.process_index == jax.process_index() for device in mesh.devices.flat)

    def sharded_step(state, batch, rng):
        size = jax.tree_util.tree_leaves(batch)[0].shape[0]
        if size % local_devices:
            raise ArgumentError(f"batch size {size} is not a multiple of the {local_devices} devices of the mesh")
        batch = jax.tree_util.tree_map(lambda x: _place(x, split), batch)
        return compiled(jax.tree_util.tree_map(lambda x: _place(x, replicated), state), batch, _place(rng, replicated))

    return sharded_step


def _place(x, sharding: NamedSharding) -> jax.Array:
    """`x` with `sharding`. In a multi-process run, a host value (or an array of this process) is this process's
    part of the global array: the whole value for a replicated sharding, its rows for a split one."""
    if isinstance(x, jax.Array) and x.sharding == sharding:
        return x
    if jax.process_count() == 1:
        return jax.device_put(x, sharding)
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(_place(jax.random.key_data(x), sharding))
    return jax.make_array_from_process_local_data(sharding, np.asarray(x))
