"""Serialized StableHLO (`jax.export`) of the model for one input size: run it later without this package's code.

    exported = export_model(model, variables, height=384, width=512)          # batch left symbolic
    save_exported("zoedepth-384x512.jaxexport", exported)
    run = load_exported("zoedepth-384x512.jaxexport")
    depth, logits = run(variables, pixel_values)                                  # any batch size

The parameters are an argument of the exported function, not constants inside it: the artifact stays small
(megabytes, not the 1.3 GB of weights) and one artifact serves any set of weights of the same architecture; load
them with `from_pretrained` (or read `flax_model.safetensors` yourself). The outputs are `(predicted_depth
[B, H, W], domain_logits [B, 2])`; for single-head checkpoints (every model but ZoeD-NK, Depth Anything's
included) the logits are an empty `[B, 0]` array, since an exported function returns arrays only. The depth is
what the model predicts: meters, or relative depth for a Depth Anything relative model.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
from jax import export as jax_export

from zoedepth_jax.errors import ConfigError, ZoeDepthError
from zoedepth_jax.files import refuse_to_overwrite, write_atomically
from zoedepth_jax.inference.estimator import check_batch_size
from zoedepth_jax.modeling.layers import traced_forms
from zoedepth_jax.modeling.models import DepthModel


def check_input_size(model: DepthModel, height: int, width: int) -> None:
    """A ConfigError unless `height` and `width` are positive multiples of the model's patch size (16 for BEiT,
    14 for DINOv2): an exported program is traced for one input size."""
    patch = model.config.backbone_config.patch_size
    if height <= 0 or width <= 0 or height % patch or width % patch:
        raise ConfigError(f"height and width must be positive multiples of the patch size {patch}: {height}x{width}")


def export_model(
    model: DepthModel,
    variables: dict,
    height: int,
    width: int,
    batch_size: int | None = None,
    platforms: tuple[str, ...] | None = None,
) -> jax_export.Exported:
    """Exports `model.apply` for `pixel_values [batch_size, height, width, 3]` float32.

    `batch_size=None` leaves the batch dimension symbolic (one artifact for every batch size); `platforms`
    defaults to the current backend (e.g. ("cpu",) or ("cuda",)); pass several to run the artifact elsewhere.
    The forms tuned for XLA:CPU (`modeling.layers.cpu_forms`) are traced when every target platform is the CPU,
    the plain ones otherwise, so an artifact exported on a CPU host for ("cuda",) carries the GPU forms.
    """
    check_input_size(model, height, width)
    if batch_size is not None:
        check_batch_size(batch_size)  # None: symbolic, any batch

    def forward(variables, pixel_values):
        output = model.apply(variables, pixel_values)
        logits = output.domain_logits
        if logits is None:
            logits = jnp.zeros((pixel_values.shape[0], 0), jnp.float32)
        return output.predicted_depth, logits

    (batch,) = jax_export.symbolic_shape("batch") if batch_size is None else (batch_size,)
    pixels = jax.ShapeDtypeStruct((batch, height, width, 3), jnp.float32)
    params = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), variables)
    targets = platforms or (jax.default_backend(),)
    with traced_forms("cpu" if all(platform == "cpu" for platform in targets) else "plain"):
        return jax_export.export(jax.jit(forward), platforms=platforms)(params, pixels)


def save_exported(path: str | os.PathLike, exported: jax_export.Exported, overwrite: bool = False) -> Path:
    """Writes the serialized artifact atomically; refuses to replace an existing file unless `overwrite`."""
    path = Path(path)
    refuse_to_overwrite([path], overwrite)
    try:
        data = exported.serialize()
    except ImportError as e:  # jax serializes with the optional flatbuffers package
        raise ZoeDepthError(f"{e}: pip install 'zoedepth-jax[export]'") from None
    write_atomically(path, lambda temp: Path(temp).write_bytes(data))
    return path


def load_exported(path: str | os.PathLike) -> Callable:
    """Reads an artifact written by `save_exported`; returns `run(variables, pixel_values) -> (depth, logits)`."""
    path = Path(path)
    try:
        exported = jax_export.deserialize(bytearray(path.read_bytes()))
    except ImportError as e:
        raise ZoeDepthError(f"{e}: pip install 'zoedepth-jax[export]'") from None
    except OSError as e:
        raise ZoeDepthError(f"cannot read {path}: {e}") from None
    except Exception as e:  # flatbuffer decoding errors have no common type
        raise ZoeDepthError(f"{path} is not a jax.export artifact ({type(e).__name__}: {e})") from None
    return exported.call
