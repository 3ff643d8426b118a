"""Step 1 of loading: where a checkpoint is. A local folder or file as it is; anything else as a hub id, whose
config and weights are found in the hub cache or downloaded (with progress), honouring `HF_HUB_OFFLINE`.

The file names of a checkpoint folder, and the order in which its weight files are preferred, are set here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from zoedepth_jax.errors import CheckpointError

CONFIG_NAME = "config.json"
PREPROCESSOR_CONFIG_NAME = "preprocessor_config.json"  # optional: the image processor's settings
FLAX_WEIGHTS_NAME = "flax_model.safetensors"  # written by save_pretrained: Flax names, no conversion
SAFETENSORS_NAME = "model.safetensors"  # transformers' layout
SAFETENSORS_INDEX_NAME = "model.safetensors.index.json"  # the same, sharded
PYTORCH_NAME = "pytorch_model.bin"  # transformers' layout, pickled: needs torch
WEIGHT_NAMES = (FLAX_WEIGHTS_NAME, SAFETENSORS_NAME, SAFETENSORS_INDEX_NAME, PYTORCH_NAME)  # most preferred first


def resolve(path_or_hub_id: str | os.PathLike, revision: str | None = None, cache_dir: str | None = None) -> Path:
    """A local folder, or a local checkpoint file (an original `.pt`), as is; anything else as a hub id (cached
    files are used, downloads show progress)."""
    path = Path(path_or_hub_id).expanduser()
    if path.exists():
        return path
    return _resolve_hub_id(str(path_or_hub_id), revision, cache_dir)


def first_weight_file(folder: Path) -> Path:
    """The most preferred weight file present in a checkpoint folder (see `WEIGHT_NAMES`)."""
    present = [folder / name for name in WEIGHT_NAMES if (folder / name).is_file()]
    if not present:
        raise CheckpointError(f"{folder} holds no weights: expected one of {', '.join(WEIGHT_NAMES)}")
    return present[0]


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
