"""Train-state checkpoints with Orbax: the train state, the data iterator's position and the run's metadata,
saved together at a step, so that a run resumes exactly where it stopped.

    checkpoints = TrainCheckpoints(run_dir / "checkpoints", keep=3)
    step = checkpoints.latest_step()                     # None in a new run
    if step is not None:
        state, meta = checkpoints.restore(step, state, iterator)   # `state` (a fresh one) gives the structure
    ...
    checkpoints.save(step, state, iterator, meta={"loss": 0.3})   # returns at once; written in the background
    checkpoints.close()                                            # waits for the last save

One `orbax.checkpoint.CheckpointManager` over a folder with a sub-folder per step (`<step>/state`, `<step>/data`,
`<step>/meta`): Orbax writes a step into a temporary folder and renames it when complete, so a crash or a kill
mid-save leaves the earlier steps whole (and `latest_step` never names a half-written one); the last `keep`
steps are kept. Saving is asynchronous: the arrays are copied off the device, then written while training goes
on. Every process of a multi-host run calls the same methods: Orbax writes each array once (sharded arrays by
their shards) and coordinates the commit; each process writes its own data-iterator position (Grain's
checkpoint handler). `save_pretrained` (weights only, for `from_pretrained`) is the export format; this is
the format for resuming.

`StopSignal` turns SIGTERM (what a scheduler sends before preemption) into a request the training loop sees at
its next step, so that it can save and exit instead of dying mid-step.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import grain.checkpoint as grain_checkpoint
import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from jax.sharding import SingleDeviceSharding

from zoedepth_jax.errors import CheckpointError

STATE, DATA, META = "state", "data", "meta"  # the items of a step


class TrainCheckpoints:
    """The checkpoints of a run in `directory` (created if missing): the last `keep` steps.

    `save` is asynchronous when `asynchronous` (the default): it returns once the arrays are copied from the
    devices; `wait` blocks until every started save is on disk, and `close` does that and releases the manager.
    """

    def __init__(self, directory: str | os.PathLike, keep: int = 3, asynchronous: bool = True):
        if keep < 1:
            raise CheckpointError(f"keep must be at least 1 checkpoint, got {keep}")
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=asynchronous, cleanup_tmp_directories=True
        )
        handlers = {
            STATE: ocp.StandardCheckpointHandler(),
            DATA: grain_checkpoint.CheckpointHandler(),
            META: ocp.JsonCheckpointHandler(),
        }
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

    def latest_step(self) -> int | None:
        """The last completely saved step, or None."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state, iterator=None, meta: dict | None = None) -> None:
        """Saves `state` (any tree of arrays, e.g. a `TrainState`), the position of `iterator` (a Grain
        DataLoader iterator, or None) and `meta` (JSON-serialisable) as step `step`. The iterator's position is
        read now, so the next batch it gives is the first of a resumed run."""
        items = {STATE: ocp.args.StandardSave(state), META: ocp.args.JsonSave({**(meta or {}), "step": int(step)})}
        if iterator is not None:
            items[DATA] = grain_checkpoint.CheckpointSave(iterator)
        self._manager.save(int(step), args=ocp.args.Composite(**items), force=True)

    def meta(self, step: int) -> dict:
        """The `meta` saved with step `step` (with its "step")."""
        return dict(self._manager.restore(step, args=ocp.args.Composite(**{META: ocp.args.JsonRestore()}))[META])

    def restore(self, step: int, template, iterator=None) -> tuple:
        """`(state, meta)` of step `step`: the state in the structure, shapes, dtypes and placement of
        `template` (e.g. a fresh `create_train_state`), and, given `iterator`, that iterator moved to the saved
        position (in place). A checkpoint that does not fit the template is a CheckpointError."""
        if step not in self.all_steps():
            raise CheckpointError(f"{self.directory} has no checkpoint of step {step} (it has {self.all_steps()})")
        abstract = jax.tree_util.tree_map(_abstract, template)
        items = {STATE: ocp.args.StandardRestore(abstract), META: ocp.args.JsonRestore()}
        if iterator is not None:
            items[DATA] = grain_checkpoint.CheckpointRestore(iterator)
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        except (ValueError, KeyError, TypeError, FileNotFoundError) as e:
            raise CheckpointError(
                f"{self.directory}, step {step}: the checkpoint does not fit this run's train state or data "
                f"({type(e).__name__}: {e})"
            ) from e
        return jax.tree_util.tree_map(_like, restored[STATE], template), dict(restored[META])

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> TrainCheckpoints:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _like(restored, template):
    """A restored leaf placed as its template: an array on the default device stays uncommitted (as a fresh
    state's are), so that a jitted step takes it without compiling again; others keep Orbax's placement."""
    if isinstance(template, jax.Array) and template.sharding == SingleDeviceSharding(jax.devices()[0]):
        return jax.numpy.asarray(np.asarray(restored))
    return restored


def _abstract(leaf):
    """What Orbax restores a leaf as: its shape, dtype and (for a JAX array) its placement."""
    if isinstance(leaf, jax.Array):
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)
    leaf = np.asarray(leaf)
    return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype)


class StopSignal:
    """A context in which SIGTERM (and, with `interrupt=True`, Ctrl-C) asks the training loop to stop rather
    than killing the process: `requested()` is then True. In a multi-process run `requested()` is True on every
    process as soon as one of them got the signal (it is a collective: call it at the same step everywhere).
    The previous handlers come back on exit. Outside the main thread no handler can be installed, and the
    context does nothing."""

    def __init__(self, interrupt: bool = False):
        self.signals = (signal.SIGTERM, signal.SIGINT) if interrupt else (signal.SIGTERM,)
        self._received = False
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        self._received = True

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.signals}
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}

    def requested(self) -> bool:
        if jax.process_count() == 1:
            return self._received
        flags = multihost_utils.process_allgather(np.array(self._received))
        return bool(np.any(flags))
