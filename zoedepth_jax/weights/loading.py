"""Loading and saving checkpoints, one way down: resolve -> read -> map names -> place.

    resolve     `resolve.py`     a folder, a file, or a hub id (hub cache, download)
    read        `readers.py`     the files' tensors under their own names, and the config
    map names   `hf_names.py`    transformers names -> the Flax tree
                `original_names.py` isl-org names -> transformers names (then as above)
                `depth_anything_v1.py` Depth Anything V1 metric names -> transformers names (then as above)
                `trees.py`       Flax-native files: already the tree, checked leaf by leaf
    place       `dtypes.py`      each parameter in the dtype the model uses it in, copied to JAX one at a time

Formats read, in this order of preference within a folder (`resolve.WEIGHT_NAMES`):
  flax_model.safetensors              written by `save_pretrained` (Flax names; no conversion, memory-mapped)
  model.safetensors                   transformers layout (PyTorch names)
  model.safetensors.index.json        the same, sharded
  pytorch_model.bin                   transformers layout, pickled; needs torch, read with weights_only=True
A single file (not a folder) is read as an original checkpoint: isl-org's `ZoeD_M12_{N,K,NK}.pt` or Depth Anything
V1's `depth_anything_metric_depth_{indoor,outdoor}.pt` (told apart by their keys). torch is needed, the pickle is
read with weights_only=True, and the config is read from its tensors (`original_config`, `depth_anything_v1`).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from zoedepth_jax.config import ZoeDepthConfig, config_from_json_file
from zoedepth_jax.errors import CheckpointError, ConfigError, ZoeDepthError
from zoedepth_jax.files import refuse_to_overwrite, write_atomically
from zoedepth_jax.modeling.models import DepthModel, model_for
from zoedepth_jax.weights import depth_anything_v1, hf_names, original_config, original_names, readers, trees
from zoedepth_jax.weights.dtypes import parameter_dtypes
from zoedepth_jax.weights.resolve import (
    CONFIG_NAME,
    FLAX_WEIGHTS_NAME,
    PREPROCESSOR_CONFIG_NAME,
    WEIGHT_NAMES,
    first_weight_file,
    resolve,
)

# How the tensors of a checkpoint are named: which table maps them onto the Flax tree.
FLAX, TRANSFORMERS, ORIGINAL, DEPTH_ANYTHING_V1 = "flax", "transformers", "original", "depth_anything_v1"


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
) -> tuple[DepthModel, dict]:
    """Loads a checkpoint: returns `(model, variables)` for `model.apply(variables, pixel_values)`.

    `path_or_hub_id`: a folder in Hugging Face layout, a folder written by `save_pretrained`, a hub id such
    as "Intel/zoedepth-nyu-kitti", or an original checkpoint file: isl-org's `ZoeD_M12_NK.pt` or Depth Anything V1's
    `depth_anything_metric_depth_indoor.pt` (needs torch; read with weights_only=True). The `model_type` of
    config.json chooses the model: "zoedepth" (`ZoeDepthForDepthEstimation`) or "depth_anything"
    (`DepthAnythingForDepthEstimation`, e.g. "depth-anything/Depth-Anything-V2-Small-hf"). `dtype` is the compute
    dtype of the backbone, neck and relative head. `routing` applies to ZoeD-NK only.
    Parameters are fp32, except that with a bf16 `dtype` those the model only uses in that dtype are
    stored in it (`dtypes.parameter_dtypes`: identical outputs, half the memory). Train from an fp32 load.

    For an original `.pt` file only:
      variant: ZoeD_M12: "N", "K" or "NK"; detected from the keys when None, and an error if the file holds another.
        Depth Anything V1 metric: "indoor" or "outdoor"; both released files have the same keys, so when None it
        is read from the file name as released (`..._indoor.pt`), and is an error if the name says neither
        (`depth_anything_v1`: it sets the depth range recorded in the config, 10 or 80 m).
      config: a ZoeDepthConfig (or a config.json path) to use instead of the one read from the tensors. The
        config read from the tensors uses LayerNorm eps 1e-6, as the original (timm) model ran; for Depth Anything
        V1, also the original's position-embedding resize and DPT head (`depth_anything_v1`).
    For ZoeD_M12_K (a `.pt` file, or Intel/zoedepth-kitti):
      kitti_max_depth_80: bins over 1e-3..80 m, the range of the original KITTI evaluation, instead of the
        1e-3..10 m the released config runs with. Off by default (the original inference code and transformers).
    """
    source = resolve(path_or_hub_id, revision, cache_dir)
    config, tensors, naming = _read(source, variant, config)
    if kitti_max_depth_80:
        if not isinstance(config, ZoeDepthConfig):
            raise ConfigError(f"kitti_max_depth_80 applies to ZoeDepth's KITTI head; {source} is not a ZoeDepth model")
        config = original_config.with_kitti_max_depth_80(config)
    model = model_for(config, dtype=dtype, routing=routing)
    shapes = trees.param_shapes(config)
    params = _map_names(tensors, naming, config, shapes, str(source))
    del tensors  # the params tree now holds the only references to the memory-mapped tensors
    return model, {"params": _place(params, parameter_dtypes(model, shapes))}


def _read(
    source: Path, variant: str | None, config: ZoeDepthConfig | str | os.PathLike | None
) -> tuple[ZoeDepthConfig, dict[str, np.ndarray], str]:
    """(config, tensors under the file's own names, which naming they follow) of a resolved checkpoint."""
    if source.is_file():
        if source.name in (CONFIG_NAME, *WEIGHT_NAMES):
            raise CheckpointError(f"{source} is one file of a checkpoint folder: pass the folder, {source.parent}")
        state = readers.read_original_checkpoint(source)
        if depth_anything_v1.is_depth_anything_v1(state):
            naming, read_config = DEPTH_ANYTHING_V1, depth_anything_v1.depth_anything_v1_config
        else:
            original_names.check_layout(state, str(source))
            naming, read_config = ORIGINAL, original_config.original_config
        if config is None:
            config = read_config(state, variant, source=str(source))
        elif not isinstance(config, ZoeDepthConfig):
            config = ZoeDepthConfig.from_json_file(config)
        return config, state, naming
    if variant is not None or config is not None:
        raise ConfigError(f"variant= and config= apply to original .pt files; {source} is a checkpoint folder")
    if not (source / CONFIG_NAME).is_file():
        raise CheckpointError(f"{source} has no {CONFIG_NAME}")
    config = config_from_json_file(source / CONFIG_NAME)
    path = first_weight_file(source)
    if path.name != FLAX_WEIGHTS_NAME:
        return config, readers.read_transformers_weights(path), TRANSFORMERS
    tensors, metadata = readers.read_safetensors(path)
    if metadata.get("format") != "flax":
        raise CheckpointError(f"{path} lacks the metadata format=flax that save_pretrained writes")
    return config, tensors, FLAX


def _map_names(
    tensors: dict[str, np.ndarray], naming: str, config: ZoeDepthConfig, shapes: Mapping, source: str
) -> dict:
    """The Flax params tree of `tensors`; every source key and every parameter accounted for, or an error."""
    if naming == FLAX:
        trees.check_flax_params(tensors, shapes, source)
        return trees.unflatten_params(tensors)
    if naming == ORIGINAL:
        tensors = original_names.to_hf_state_dict(tensors, source=source)
    elif naming == DEPTH_ANYTHING_V1:
        tensors = depth_anything_v1.to_hf_state_dict(tensors, source=source)
    return hf_names.convert_hf_state_dict(tensors, config, shapes, source=source)


def _place(tree: dict, dtypes: Mapping) -> dict:
    """Replaces each numpy leaf of the nested dict `tree` by a JAX array of its dtype in `dtypes`, in place and one
    at a time: each memory-mapped tensor is unmapped as soon as it is copied, so loading peaks at the parameters
    plus one tensor, not plus the whole file. Returns `tree`."""
    for key, value in tree.items():
        if isinstance(value, dict):
            _place(value, dtypes[key])
        else:
            tree[key] = jnp.asarray(value, dtype=dtypes[key])
    return tree


def save_pretrained(
    directory: str | os.PathLike, model: DepthModel, variables: Mapping, overwrite: bool = False
) -> Path:
    """Writes `config.json` and `flax_model.safetensors` (Flax names, fp32), each atomically.

    The folder loads back with `from_pretrained` without torch. Existing files are kept unless `overwrite`
    (an OutputExistsError names them).
    """
    from safetensors.numpy import save_file

    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_NAME, directory / FLAX_WEIGHTS_NAME
    refuse_to_overwrite([config_path, weights_path], overwrite)
    flat = trees.flatten_params(variables["params"])
    trees.check_flax_params(flat, trees.param_shapes(model.config), "variables")
    arrays = {name: np.ascontiguousarray(np.asarray(value, dtype=np.float32)) for name, value in flat.items()}
    metadata = {"format": "flax", "producer": "zoedepth-jax"}
    directory.mkdir(parents=True, exist_ok=True)
    write_atomically(weights_path, lambda temp: save_file(arrays, temp, metadata=metadata))
    write_atomically(config_path, lambda temp: Path(temp).write_text(model.config.to_json_string()))
    return directory


@dataclasses.dataclass(frozen=True)
class Conversion:
    """What `convert` wrote: the folder, its files, the number of parameters and bytes, and the time it took."""

    out: Path
    files: tuple[Path, ...]
    num_parameters: int
    num_bytes: int
    seconds: float


def convert(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    variant: str | None = None,
    kitti_max_depth_80: bool = False,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Conversion:
    """Converts a checkpoint (hub id, folder or original `.pt`) into a Flax-native folder at `out`.

    The folder holds `config.json`, `flax_model.safetensors` and, when the source has one, a copy of its
    `preprocessor_config.json`, checked first to hold settings the model's image processor runs (a ConfigError
    naming the file otherwise); it loads with `from_pretrained` without torch.
    Existing files are refused before the (slow) load unless `overwrite`. `progress`, if given, is called with a
    line before each step.
    """
    start = time.perf_counter()
    report = progress or (lambda line: None)
    out = Path(out)
    names = (CONFIG_NAME, FLAX_WEIGHTS_NAME, PREPROCESSOR_CONFIG_NAME)
    refuse_to_overwrite([out / name for name in names], overwrite)
    report(f"[1/3] finding {source}")
    folder = resolve(source)
    report(f"[2/3] reading and converting the weights in {folder}")
    model, variables = from_pretrained(folder, variant=variant, kitti_max_depth_80=kitti_max_depth_80)
    processor_config = folder / PREPROCESSOR_CONFIG_NAME if folder.is_dir() else None
    if processor_config is not None and processor_config.is_file():
        from zoedepth_jax.inference.estimator import PROCESSORS

        PROCESSORS[type(model)].from_json_file(processor_config)  # refuse to pass on settings we cannot run
    else:
        processor_config = None
    report(f"[3/3] writing {out}")
    try:
        save_pretrained(out, model, variables, overwrite=overwrite)
        if processor_config is not None:
            write_atomically(out / PREPROCESSOR_CONFIG_NAME, lambda temp: shutil.copyfile(processor_config, temp))
    except ZoeDepthError:  # OutputExistsError is an OSError too, and already says what went wrong
        raise
    except OSError as e:
        raise CheckpointError(f"cannot write {out}: {e}") from None
    files = tuple(out / name for name in names if (out / name).exists())
    return Conversion(
        out=out,
        files=files,
        num_parameters=sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(variables["params"])),
        num_bytes=sum(path.stat().st_size for path in files),
        seconds=time.perf_counter() - start,
    )
