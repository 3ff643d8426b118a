"""Checkpoint I/O: find a checkpoint (local folder, hub id, hub cache), read it, and save Flax-native folders.

Formats read, in this order of preference within a folder:
  flax_model.safetensors              written by `save_pretrained` (Flax names; no conversion, memory-mapped)
  model.safetensors                   transformers layout (PyTorch names, converted by `checkpoint_map`)
  model.safetensors.index.json        the same, sharded
  pytorch_model.bin                   transformers layout, pickled; needs torch, read with weights_only=True
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from zoedepth_jax import checkpoint_map
from zoedepth_jax.config import ZoeDepthConfig
from zoedepth_jax.errors import CheckpointError
from zoedepth_jax.files import write_atomically
from zoedepth_jax.modeling.zoedepth import ZoeDepthForDepthEstimation

CONFIG_NAME = "config.json"
PREPROCESSOR_CONFIG_NAME = "preprocessor_config.json"  # optional: the image processor's settings
FLAX_WEIGHTS_NAME = "flax_model.safetensors"
SAFETENSORS_NAME = "model.safetensors"
SAFETENSORS_INDEX_NAME = "model.safetensors.index.json"
PYTORCH_NAME = "pytorch_model.bin"
WEIGHT_NAMES = (FLAX_WEIGHTS_NAME, SAFETENSORS_NAME, SAFETENSORS_INDEX_NAME, PYTORCH_NAME)

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


def _read_sharded_safetensors(index_path: Path) -> dict[str, np.ndarray]:
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


def read_pytorch_bin(path: Path) -> dict[str, np.ndarray]:
    """Reads a pickled PyTorch state dict with `weights_only=True`: a pickle that would run code is refused."""
    try:
        import torch
    except ImportError:
        raise CheckpointError(
            f"{path} is a PyTorch pickle; reading it needs torch (pip install 'zoedepth-jax[convert]'), "
            "or convert it once to safetensors"
        ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError or EOFError depending on the damage
        raise CheckpointError(f"{path} could not be read safely as a PyTorch checkpoint: {e}") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a flat state dict of tensors")
    return {
        name: tensor.float().numpy() if tensor.is_floating_point() else tensor.numpy() for name, tensor in state.items()
    }


def _target_shapes(model: ZoeDepthForDepthEstimation) -> dict:
    side = 4 * model.config.backbone_config.patch_size
    return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, side, side, 3)))["params"]


def load_params(folder: Path, config: ZoeDepthConfig, model: ZoeDepthForDepthEstimation) -> dict:
    """Reads the weights in `folder` (see the module docstring for the formats) as an fp32 params tree."""
    shapes = _target_shapes(model)
    present = [name for name in WEIGHT_NAMES if (folder / name).is_file()]
    if not present:
        raise CheckpointError(f"{folder} holds no weights: expected one of {', '.join(WEIGHT_NAMES)}")
    name = present[0]
    path = folder / name
    if name == FLAX_WEIGHTS_NAME:
        flat, metadata = read_safetensors(path)
        if metadata.get("format") != "flax":
            raise CheckpointError(f"{path} lacks the metadata format=flax that save_pretrained writes")
        checkpoint_map.check_flax_params(flat, shapes, str(path))
        params = checkpoint_map.unflatten_params(flat)
    else:
        if name == SAFETENSORS_NAME:
            state = read_safetensors(path)[0]
        elif name == SAFETENSORS_INDEX_NAME:
            state = _read_sharded_safetensors(path)
        else:
            state = read_pytorch_bin(path)
        params = checkpoint_map.convert_hf_state_dict(state, config, shapes, source=str(path))
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype=jnp.float32), params)


def _resolve_hub_id(repo_id: str, revision: str | None, cache_dir: str | None) -> Path:
    """Downloads (or finds in the cache, honouring HF_HUB_OFFLINE) the config and the first weight file present."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HFValidationError, LocalEntryNotFoundError

    def fetch(filename: str) -> Path | None:
        try:
            return Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir))
        except (EntryNotFoundError, LocalEntryNotFoundError):
            return None

    try:
        config_path = fetch(CONFIG_NAME)
    except HFValidationError:
        raise CheckpointError(f"{repo_id!r} is neither a local folder nor a valid hub id") from None
    except Exception as e:  # repository missing, gated, network down: the hub library says which
        raise CheckpointError(f"could not resolve {repo_id!r} on the hub: {e}") from None
    if config_path is None:
        raise CheckpointError(
            f"{CONFIG_NAME} of {repo_id!r} is neither in the hub cache nor downloadable "
            "(offline mode needs the model in the cache: run once online, or pass a local folder)"
        )
    fetch(PREPROCESSOR_CONFIG_NAME)  # optional; lands beside config.json when the repository has it
    for name in WEIGHT_NAMES:
        path = fetch(name)
        if path is None:
            continue
        if name == SAFETENSORS_INDEX_NAME:
            weight_map = json.loads(path.read_text()).get("weight_map", {})
            for shard in sorted(set(weight_map.values())):
                if fetch(shard) is None:
                    raise CheckpointError(f"shard {shard} of {repo_id!r} is not available")
        return config_path.parent
    raise CheckpointError(f"{repo_id!r} has none of {', '.join(WEIGHT_NAMES)} in the hub cache or on the hub")


def resolve(path_or_hub_id: str | os.PathLike, revision: str | None = None, cache_dir: str | None = None) -> Path:
    """A local folder as is; anything else as a hub id (cached files are used, downloads show progress)."""
    path = Path(path_or_hub_id).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"{path} is a file; pass the folder that holds {CONFIG_NAME} and the weights")
    return _resolve_hub_id(str(path_or_hub_id), revision, cache_dir)


def from_pretrained(
    path_or_hub_id: str | os.PathLike,
    dtype=jnp.float32,
    routing: str = "per_image",
    revision: str | None = None,
    cache_dir: str | None = None,
) -> tuple[ZoeDepthForDepthEstimation, dict]:
    """Loads a checkpoint: returns `(model, variables)` for `model.apply(variables, pixel_values)`.

    `path_or_hub_id`: a folder in Hugging Face layout, a folder written by `save_pretrained`, or a hub id such
    as "Intel/zoedepth-nyu-kitti". Parameters are fp32; `dtype` is the compute dtype.
    """
    folder = resolve(path_or_hub_id, revision, cache_dir)
    if not (folder / CONFIG_NAME).is_file():
        raise CheckpointError(f"{folder} has no {CONFIG_NAME}")
    config = ZoeDepthConfig.from_json_file(folder / CONFIG_NAME)
    model = ZoeDepthForDepthEstimation(config, dtype=dtype, routing=routing)
    return model, {"params": load_params(folder, config, model)}


def save_pretrained(
    directory: str | os.PathLike, model: ZoeDepthForDepthEstimation, variables: Mapping, overwrite: bool = False
) -> Path:
    """Writes `config.json` and `flax_model.safetensors` (Flax names, fp32), each atomically.

    The folder loads back with `from_pretrained` without torch. Existing files are kept unless `overwrite`.
    """
    from safetensors.numpy import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    targets = [directory / CONFIG_NAME, directory / FLAX_WEIGHTS_NAME]
    existing = [str(p) for p in targets if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"not overwriting {', '.join(existing)} (pass overwrite=True)")
    flat = checkpoint_map.flatten_params(variables["params"])
    checkpoint_map.check_flax_params(flat, _target_shapes(model), "variables")
    arrays = {name: np.ascontiguousarray(np.asarray(value, dtype=np.float32)) for name, value in flat.items()}
    metadata = {"format": "flax", "producer": "zoedepth-jax"}
    write_atomically(targets[1], lambda temp: save_file(arrays, temp, metadata=metadata))
    write_atomically(targets[0], lambda temp: Path(temp).write_text(model.config.to_json_string()))
    return directory
