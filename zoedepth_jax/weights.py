"""Checkpoint I/O: find a checkpoint (local folder, hub id, hub cache), read it, and save Flax-native folders.

Formats read, in this order of preference within a folder:
  flax_model.safetensors              written by `save_pretrained` (Flax names; no conversion, memory-mapped)
  model.safetensors                   transformers layout (PyTorch names, converted by `checkpoint_map`)
  model.safetensors.index.json        the same, sharded
  pytorch_model.bin                   transformers layout, pickled; needs torch, read with weights_only=True

A single file (not a folder) is read as an original isl-org checkpoint, `ZoeD_M12_{N,K,NK}.pt`: torch is needed,
the pickle is read with weights_only=True, and the names and config come from `original_checkpoint`.
"""

from __future__ import annotations

import functools
import json
import os
import pickle
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from zoedepth_jax import checkpoint_map, original_checkpoint
from zoedepth_jax.compute_dtype import parameter_dtypes
from zoedepth_jax.config import ZoeDepthConfig
from zoedepth_jax.errors import CheckpointError, ConfigError
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
    """The state dict of an original isl-org checkpoint (`{"model": state_dict, ...}`, or a bare state dict), as
    numpy arrays with the original names. Other top-level entries are not read. A `module.` prefix on every key
    (DataParallel) is removed, as the original loader does."""
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
    if not original_checkpoint.is_original_layout(state):
        hint = (
            " It is in transformers' layout: save it as pytorch_model.bin in a folder beside its config.json."
            if any(name.startswith(("backbone.", "neck.")) for name in state)
            else ""
        )
        raise CheckpointError(
            f"{path} is not an original ZoeDepth checkpoint: none of its {len(state)} keys starts with "
            f"'core.core.' (first keys: {list(state)[:5]}).{hint}"
        )
    return state


@functools.lru_cache(maxsize=16)
def _param_shapes(config: ZoeDepthConfig) -> dict:
    """The params tree of a config as `jax.ShapeDtypeStruct`s (traced once per config; callers only read it)."""
    side = 4 * config.backbone_config.patch_size
    model = ZoeDepthForDepthEstimation(config)
    return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, side, side, 3)))["params"]


def _target_shapes(model: ZoeDepthForDepthEstimation) -> dict:
    return _param_shapes(model.config)  # dtype and routing change no parameter


def _move_to_jax(tree: dict, dtypes: Mapping) -> dict:
    """Replaces each numpy leaf of the nested dict `tree` by a JAX array of its dtype in `dtypes`, in place and one
    at a time: each memory-mapped tensor is unmapped as soon as it is copied, so loading peaks at the parameters
    plus one tensor, not plus the whole file. Returns `tree`."""
    for key, value in tree.items():
        if isinstance(value, dict):
            _move_to_jax(value, dtypes[key])
        else:
            tree[key] = jnp.asarray(value, dtype=dtypes[key])
    return tree


def load_params(folder: Path, config: ZoeDepthConfig, model: ZoeDepthForDepthEstimation) -> dict:
    """Reads the weights in `folder` (see the module docstring for the formats) as a params tree, each parameter
    in the dtype `compute_dtype.parameter_dtypes` gives it for `model`."""
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
        del flat  # the params tree holds the only references to the mapped tensors
    else:
        if name == SAFETENSORS_NAME:
            state = read_safetensors(path)[0]
        elif name == SAFETENSORS_INDEX_NAME:
            state = _read_sharded_safetensors(path)
        else:
            state = read_pytorch_bin(path)
        params = checkpoint_map.convert_hf_state_dict(state, config, shapes, source=str(path))
        del state
    return _move_to_jax(params, parameter_dtypes(model, shapes))


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
    """A local folder, or a local checkpoint file (an original `.pt`), as is; anything else as a hub id (cached
    files are used, downloads show progress)."""
    path = Path(path_or_hub_id).expanduser()
    if path.exists():
        return path
    return _resolve_hub_id(str(path_or_hub_id), revision, cache_dir)


def _load_original(
    path: Path, variant: str | None, config: ZoeDepthConfig | str | os.PathLike | None
) -> tuple[ZoeDepthConfig, dict[str, np.ndarray]]:
    """(config, transformers-layout state dict) of an original isl-org `.pt` file."""
    state = read_original_checkpoint(path)
    if config is None:
        config = original_checkpoint.original_config(state, variant, source=str(path))
    elif not isinstance(config, ZoeDepthConfig):
        config = ZoeDepthConfig.from_json_file(config)
    return config, original_checkpoint.to_hf_state_dict(state, source=str(path))


def from_pretrained(
    path_or_hub_id: str | os.PathLike,
    dtype=jnp.float32,
    routing: str = "per_image",
    revision: str | None = None,
    cache_dir: str | None = None,
    *,
    variant: str | None = None,
    config: ZoeDepthConfig | str | os.PathLike | None = None,
    kitti_max_depth_80: bool = False,
) -> tuple[ZoeDepthForDepthEstimation, dict]:
    """Loads a checkpoint: returns `(model, variables)` for `model.apply(variables, pixel_values)`.

    `path_or_hub_id`: a folder in Hugging Face layout, a folder written by `save_pretrained`, a hub id such
    as "Intel/zoedepth-nyu-kitti", or an original isl-org checkpoint file such as `ZoeD_M12_NK.pt` (needs torch;
    read with weights_only=True). `dtype` is the compute dtype of the backbone, neck and relative head.
    Parameters are fp32, except that with a bf16 (or fp16) `dtype` those the model only uses in that dtype are
    stored in it (`compute_dtype.parameter_dtypes`: identical outputs, half the memory). Train from an fp32 load.

    For an original `.pt` file only:
      variant: "N", "K" or "NK"; detected from the keys when None, and an error if the file holds another.
      config: a ZoeDepthConfig (or a config.json path) to use instead of the one read from the tensors. The
        config read from the tensors uses LayerNorm eps 1e-6, as the original (timm) model ran.
    For ZoeD_M12_K (a `.pt` file, or Intel/zoedepth-kitti):
      kitti_max_depth_80: bins over 1e-3..80 m, the range of the original KITTI evaluation, instead of the
        1e-3..10 m the released config runs with. Off by default (the original inference code and transformers).
    """
    source = resolve(path_or_hub_id, revision, cache_dir)
    if source.is_file() and source.name in (CONFIG_NAME, *WEIGHT_NAMES):
        raise CheckpointError(f"{source} is one file of a checkpoint folder: pass the folder, {source.parent}")
    if source.is_file():
        config, state = _load_original(source, variant, config)
    else:
        if variant is not None or config is not None:
            raise ConfigError(f"variant= and config= apply to original .pt files; {source} is a checkpoint folder")
        if not (source / CONFIG_NAME).is_file():
            raise CheckpointError(f"{source} has no {CONFIG_NAME}")
        config, state = ZoeDepthConfig.from_json_file(source / CONFIG_NAME), None
    if kitti_max_depth_80:
        config = original_checkpoint.with_kitti_max_depth_80(config)
    model = ZoeDepthForDepthEstimation(config, dtype=dtype, routing=routing)
    if state is None:
        params = load_params(source, config, model)
    else:
        shapes = _target_shapes(model)
        params = checkpoint_map.convert_hf_state_dict(state, config, shapes, source=str(source))
        del state
        params = _move_to_jax(params, parameter_dtypes(model, shapes))
    return model, {"params": params}


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
