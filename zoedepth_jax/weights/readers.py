"""Step 2 of loading: reading checkpoint files into numpy arrays, with the names they have in the file.

safetensors files are memory-mapped (nothing is read until a tensor is used); PyTorch pickles need torch and are
read with `weights_only=True`, so a pickle that would run code is refused before any of it runs. Every failure
(truncated, damaged, unsafe, not a checkpoint) is a CheckpointError naming the file.
"""

from __future__ import annotations

import json
import os
import pickle
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from zoedepth_jax.errors import CheckpointError

_SAFETENSORS_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": jnp.bfloat16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Memory-maps every tensor of a safetensors file; returns (tensors, metadata).

    A file whose header is malformed or whose tensors run past its end (a truncated download) is a
    CheckpointError naming the file.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{path} is not a safetensors file: it holds only {size} bytes")
        header_size = int.from_bytes(prefix, "little")
        if header_size > size - 8:
            raise CheckpointError(f"{path} is not a safetensors file, or is truncated: header of {header_size} bytes")
        try:
            header = json.loads(f.read(header_size))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path} is not a safetensors file: unreadable header ({e})") from None
    metadata = header.pop("__metadata__", None) or {}
    data_start = 8 + header_size
    tensors = {}
    for name, entry in header.items():
        try:
            dtype = np.dtype(_SAFETENSORS_DTYPES[entry["dtype"]])
            shape = tuple(entry["shape"])
            begin, end = entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: malformed header entry for {name!r}: {entry!r}") from None
        if data_start + end > size:
            raise CheckpointError(f"{path} is truncated: tensor {name!r} ends at byte {data_start + end} of {size}")
        if end - begin != dtype.itemsize * int(np.prod(shape)):
            raise CheckpointError(f"{path}: tensor {name!r} has {end - begin} bytes for shape {shape} {dtype}")
        tensors[name] = np.memmap(path, dtype=dtype, mode="r", offset=data_start + begin, shape=shape)
    return tensors, metadata


def read_sharded_safetensors(index_path: Path) -> dict[str, np.ndarray]:
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{index_path} is not a safetensors index ({e})") from None
    tensors: dict[str, np.ndarray] = {}
    for shard in sorted(set(weight_map.values())):
        shard_tensors, _ = read_safetensors(index_path.parent / shard)
        listed = {name for name, file in weight_map.items() if file == shard}
        if set(shard_tensors) != listed:
            raise CheckpointError(
                f"{index_path.parent / shard} holds {sorted(set(shard_tensors) ^ listed)[:10]} contrary to {index_path}"
            )
        tensors.update(shard_tensors)
    return tensors


def _torch_load(path: Path) -> object:
    """`torch.load(path, weights_only=True)`: tensors, containers and numbers only; a pickle that would import or
    call anything else is refused before it runs. Every failure is a CheckpointError naming the file."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK"):  # torch.save's zip container (torch >= 1.6)
        if not zipfile.is_zipfile(path):
            raise CheckpointError(
                f"{path} is a truncated or damaged PyTorch checkpoint ({size:,} bytes, its zip directory is "
                "missing): download it again"
            )
    elif not head.startswith(b"\x80"):  # the legacy format starts with a pickle protocol marker
        what = "is empty" if not size else f"starts with {head!r}"
        raise CheckpointError(f"{path} is not a PyTorch checkpoint: it {what}")
    try:
        import torch
    except ImportError:
        raise CheckpointError(
            f"{path} is a PyTorch pickle; reading it needs torch: pip install 'zoedepth-jax[convert]' "
            "(then `zoedepth-jax convert` it once into a folder that loads without torch)"
        ) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about unusual pickle protocols before refusing them
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only load failed" not in str(e).lower():  # a damaged stream, not a refusal
            raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (truncated or damaged?): {e}") from None
        reasons = [line.strip() for line in str(e).splitlines() if "unsupported" in line.lower()]
        raise CheckpointError(
            f"{path} could not be read safely and was refused as unsafe: unpickling it would import or call "
            f"something other than tensors ({'; '.join(reasons) or 'weights_only refused it'}). Nothing in it was "
            "run. A checkpoint of tensors, numbers and dicts loads this way; do not open this file with full "
            "unpickling unless you trust where it came from."
        ) from None
    except Exception as e:  # RuntimeError, EOFError, ...: what torch raises depends on where the damage is
        raise CheckpointError(
            f"{path} could not be read as a PyTorch checkpoint; it may be truncated or damaged (download it "
            f"again): {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from None


def _to_numpy(state: Mapping, path: Path, what: str) -> dict[str, np.ndarray]:
    import torch

    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(f"{path} does not hold {what}")
    others = [str(k) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if others:
        raise CheckpointError(f"{path}: {what} holds entries that are not tensors: {others[:10]}")
    return {
        name: tensor.float().numpy() if tensor.is_floating_point() else tensor.numpy() for name, tensor in state.items()
    }


def read_pytorch_bin(path: Path) -> dict[str, np.ndarray]:
    """Reads a pickled PyTorch state dict with `weights_only=True`: a pickle that would run code is refused."""
    return _to_numpy(_torch_load(path), path, "a flat state dict of tensors")


def read_original_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The state dict of an original checkpoint (isl-org ZoeDepth or Depth Anything V1 metric: `{"model":
    state_dict, ...}`, or a bare state dict), as numpy arrays with the original names. Other top-level entries are
    not read. A `module.` prefix on every key (DataParallel) is removed, as the original loader does. Whose names
    they are is checked when they are mapped (`depth_anything_v1.is_depth_anything_v1`,
    `original_names.check_layout`)."""
    path = Path(path)
    loaded = _torch_load(path)
    if isinstance(loaded, Mapping) and isinstance(loaded.get("model"), Mapping):
        state = loaded["model"]
    elif isinstance(loaded, Mapping) and "model" not in loaded:
        state = loaded  # a bare state dict; anything but tensors in it is refused below
    else:
        raise CheckpointError(f"{path} holds a {type(loaded).__name__}, not a dict with a 'model' state dict")
    state = _to_numpy(state, path, "a 'model' state dict of tensors")
    if all(name.startswith("module.") for name in state):
        state = {name.removeprefix("module."): value for name, value in state.items()}
    return state


def read_transformers_weights(path: Path) -> dict[str, np.ndarray]:
    """A transformers state dict from `model.safetensors`, its sharded index, or `pytorch_model.bin`."""
    if path.name.endswith(".index.json"):
        return read_sharded_safetensors(path)
    if path.suffix == ".safetensors":
        return read_safetensors(path)[0]
    return read_pytorch_bin(path)
