"""An ONNX graph of the model for one input size, with the weights inside: a single file to serve with ONNX Runtime
(or any ONNX runtime), without JAX or this package.

    model, variables = from_pretrained("Intel/zoedepth-nyu-kitti")
    export_onnx(model, variables, "zoedepth-nk-384x512.onnx", height=384, width=512)

    runtime = onnxruntime.InferenceSession("zoedepth-nk-384x512.onnx")
    depth, logits = runtime.run(None, {"pixel_values": pixel_values})   # NHWC float32, any batch size

The graph is converted from the JAX program by jax2onnx (`pip install 'zoedepth-jax[onnx]'`); torch's exporters
cannot follow ZoeD-NK's router, which picks a head with a Python-level `.item()`. Here the router is part of the
graph: each image takes the head its own logits choose (`routing="per_image"`).

Every model `from_pretrained` loads exports: ZoeDepth on BEiT or DINOv2 (Depth Anything V1 metric included) and
Depth Anything V2. A Depth Anything relative model's one output is `predicted_relative_depth` (affine-invariant
inverse depth, no unit, the key `DepthEstimator` returns it under), so that the file says what it holds.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import jax.numpy as jnp

from zoedepth_jax.errors import ArgumentError, ZoeDepthError
from zoedepth_jax.files import refuse_to_overwrite, write_atomically
from zoedepth_jax.inference.estimator import RELATIVE_DEPTH_KEY, is_relative
from zoedepth_jax.inference.export import check_input_size
from zoedepth_jax.modeling.layers import traced_forms
from zoedepth_jax.modeling.models import DepthModel, is_multi_domain
from zoedepth_jax.modeling.zoedepth import ZoeDepthForDepthEstimation

# The graph uses no operator newer than opset 17 (LayerNormalization's opset; attention, convolutions, Einsum,
# ArgMax and GatherND are older), and opset 17 is read by every maintained runtime: ONNX Runtime, TensorRT,
# OpenVINO. A newer opset can be asked for with `opset=`.
DEFAULT_OPSET = 17
INPUT_NAME = "pixel_values"
DEPTH_OUTPUT = "predicted_depth"
RELATIVE_DEPTH_OUTPUT = RELATIVE_DEPTH_KEY  # a Depth Anything relative model's depth, which is not in meters
LOGITS_OUTPUT = "domain_logits"
BATCH_DIMENSION = "batch"  # the symbolic name of the batch dimension in the graph
INSTALL_HINT = "pip install 'zoedepth-jax[onnx]'"

# jax2onnx's IR serializer logs a warning for every shape-computing value whose type it leaves unset (the
# values are still written, and runtimes infer their types); hundreds of these would bury the caller's output.
_QUIET_LOGGERS = ("onnx_ir.serde",)


def export_onnx(
    model: DepthModel,
    variables: dict,
    path: str | os.PathLike,
    height: int,
    width: int,
    *,
    overwrite: bool = False,
    opset: int | None = None,
) -> Path:
    """Writes an ONNX graph of `model.apply(variables, pixel_values)` to `path` and returns the path.

    Input `pixel_values [batch, height, width, 3]` float32 (NHWC, normalised as the image processor does), the
    batch dimension symbolic, height and width fixed here (multiples of the patch size: 16 for BEiT, 14 for
    DINOv2). Outputs `predicted_depth [batch, height, width]` in meters (`predicted_relative_depth` for a Depth
    Anything relative model) and, for a two-head (ZoeD-NK) model, `domain_logits [batch, 2]`. The weights are
    initializers inside the file.

    The plain forms are traced (`traced_forms("plain")`: whole-tensor attention and convolutions, no loops): the
    CPU forms' loops over row bands and query chunks are tuned for XLA:CPU and convert poorly to ONNX. The file is
    written atomically, and an existing one is replaced only with `overwrite=True`. `opset` defaults to
    DEFAULT_OPSET.
    """
    path = Path(path)
    check_input_size(model, height, width)
    if isinstance(model, ZoeDepthForDepthEstimation) and model.routing != "per_image":
        raise ArgumentError(
            f"routing={model.routing!r} picks one head for the whole batch, so an image's depth would depend on the "
            "other images served with it; the ONNX graph routes each image by its own logits: load the model with "
            "routing='per_image' (the default)"
        )
    if jnp.dtype(model.dtype) != jnp.float32:
        raise ArgumentError(
            f"the model computes in {jnp.dtype(model.dtype).name}; export an fp32 model (from_pretrained(..., "
            "dtype=jnp.float32)): ONNX Runtime's CPU provider has no bfloat16 kernels for most of the graph's operators"
        )
    refuse_to_overwrite([path], overwrite)
    jax2onnx = _import_converter()

    def forward(pixel_values):
        output = model.apply(variables, pixel_values)
        if output.domain_logits is None:
            return output.predicted_depth
        return output.predicted_depth, output.domain_logits

    depth_name = RELATIVE_DEPTH_OUTPUT if is_relative(model) else DEPTH_OUTPUT
    output_names = [depth_name, LOGITS_OUTPUT] if is_multi_domain(model) else [depth_name]
    with traced_forms("plain"), _quiet(_QUIET_LOGGERS):
        try:
            graph = jax2onnx.to_onnx(
                forward,
                [(BATCH_DIMENSION, height, width, 3)],  # float32: jax2onnx's default without double precision
                model_name="zoedepth",
                opset=DEFAULT_OPSET if opset is None else opset,
                input_names=[INPUT_NAME],
                output_names=output_names,
                return_mode="proto",
            )
        except Exception as e:  # the converter's failures share no base class
            raise ZoeDepthError(_conversion_failure(e)) from e

    import onnx  # a dependency of jax2onnx, importable once it is

    write_atomically(path, lambda temp: onnx.save_model(graph, temp))
    return path


def _import_converter():
    """The jax2onnx module, or a ZoeDepthError saying how to install it."""
    try:
        import jax2onnx
    except ImportError as e:
        raise ZoeDepthError(f"exporting to ONNX needs jax2onnx ({e}): {INSTALL_HINT}") from None
    return jax2onnx


def _conversion_failure(error: Exception) -> str:
    """A message naming the JAX primitive jax2onnx was lowering when it failed, if it was lowering one.

    jax2onnx keeps the primitive's name in a local variable `primitive_name` of its lowering frames; the innermost
    one is the primitive that failed (outer ones are the `jit` or `pjit` calls that hold it)."""
    primitive = None
    frame = error.__traceback__
    while frame is not None:
        name = frame.tb_frame.f_locals.get("primitive_name")
        if isinstance(name, str):
            primitive = name
        frame = frame.tb_next
    where = f"on the JAX primitive '{primitive}'" if primitive else "while tracing"
    return (
        f"jax2onnx could not convert the model {where} ({type(error).__name__}: {error}). A newer jax2onnx may "
        "support it; otherwise a jax2onnx plugin for that primitive, or a model form that avoids it, is needed"
    )


@contextlib.contextmanager
def _quiet(logger_names: tuple[str, ...]) -> Iterator[None]:
    """Raises the named loggers to ERROR inside the block, restoring their levels after."""
    loggers = [logging.getLogger(name) for name in logger_names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
