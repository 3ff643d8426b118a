"""Saving and restoring a train state (params, optimizer state, step) so that a crash never loses the last one.

A checkpoint is one safetensors file: every array of the state under its tree path (`params/backbone/...`,
`opt_state/1/inner_states/head/...`, `step`) and, in the header's metadata, the step and what the caller adds
(e.g. the model config). It is written to a temporary file beside the target, synced, and renamed over it
(`files.write_atomically`): a crash or a full disk mid-write leaves the previous checkpoint whole, and at
worst a `.<name>.*.tmp` file behind. One file, not arrays plus a JSON sidecar, so that the state and its
metadata can never come from two different saves.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import numpy as np
from safetensors.numpy import save_file

from zoedepth_jax.errors import ArgumentError, CheckpointError
from zoedepth_jax.files import write_atomically
from zoedepth_jax.weights.readers import read_safetensors
from zoedepth_jax.weights.trees import problems_message

FORMAT = "zoedepth-jax-train-state"


def _key_name(entry) -> str:
    for attribute in ("key", "name", "idx"):
        if hasattr(entry, attribute):
            return str(getattr(entry, attribute))
    raise ArgumentError(f"unsupported tree path entry {entry!r}")


def flatten_state(state) -> dict[str, jax.Array]:
    """`{"params/backbone/.../kernel": array, "step": array, ...}`: every array leaf of `state` by its path."""
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    return {"/".join(_key_name(entry) for entry in path): leaf for path, leaf in leaves}


def _shape_and_dtype(leaf) -> tuple[tuple[int, ...], np.dtype]:
    if hasattr(leaf, "dtype"):  # a jax or numpy array: no copy to the host
        return tuple(leaf.shape), np.dtype(leaf.dtype)
    value = np.asarray(leaf)
    return value.shape, value.dtype


def save_train_state(path: str | os.PathLike, state, metadata: dict[str, str] | None = None) -> Path:
    """Writes `state` (a `TrainState` or any tree of arrays) to `path` atomically; returns the path.

    `metadata` (strings) is stored in the file's header beside the format name and the step, if the state has
    one. Arrays are copied to the host first (a sharded array is gathered).
    """
    path = Path(path)
    # order="C", not np.ascontiguousarray, which turns the 0-d step and counters into 1-d arrays.
    arrays = {name: np.asarray(leaf, order="C") for name, leaf in flatten_state(state).items()}
    header = {**(metadata or {}), "format": FORMAT}
    if "step" in arrays:
        header["step"] = str(int(arrays["step"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda temp: save_file(arrays, temp, metadata=header))
    return path


def read_train_state_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a train-state checkpoint (format, step and what `save_train_state` was given)."""
    _, metadata = read_safetensors(path)
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a zoedepth-jax train state (metadata format={metadata.get('format')!r})")
    return metadata


def load_train_state(path: str | os.PathLike, template):
    """Restores the state saved at `path` into the structure of `template` (e.g. a fresh `create_train_state`):
    every leaf must be present with the template's shape and dtype, and nothing else may be in the file; any
    difference is a CheckpointError listing all of them. Returns a state like `template` with the saved arrays
    (on the default device)."""
    read_train_state_metadata(path)
    arrays, _ = read_safetensors(path)
    expected = {name: _shape_and_dtype(leaf) for name, leaf in flatten_state(template).items()}
    problems = {
        "unexpected keys": sorted(set(arrays) - set(expected)),
        "mis-shaped keys": sorted(
            f"{name}: {arrays[name].shape} {arrays[name].dtype}, the state expects {shape} {dtype}"
            for name, (shape, dtype) in expected.items()
            if name in arrays and (arrays[name].shape, arrays[name].dtype) != (shape, dtype)
        ),
        "missing parameters": sorted(set(expected) - set(arrays)),
    }
    if any(problems.values()):
        raise CheckpointError(problems_message(str(path), problems))
    treedef = jax.tree_util.tree_structure(template)
    return jax.tree_util.tree_unflatten(treedef, [jax.numpy.array(arrays[name]) for name in expected])
