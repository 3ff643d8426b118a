"""`DepthEstimator`: images in, depth out, as transformers' depth-estimation pipeline returns it.

    from zoedepth_jax import pipeline
    estimator = pipeline("Intel/zoedepth-nyu-kitti")
    result = estimator("photo.jpg")
    result["predicted_depth"]   # float32 numpy [H, W], meters, at the photo's size
    result["depth"]             # PIL greyscale image of the same depth, for viewing

Models, and what their results hold (`depth_key` names the map):
  ZoeDepth, Depth Anything metric   `predicted_depth`: meters.
  Depth Anything relative           `predicted_relative_depth`: affine-invariant inverse depth (larger is nearer,
                                    no unit: known up to an unknown scale and shift), never `predicted_depth`, so
                                    that it cannot be taken for meters.
Each model runs with the processor of its family (`ZoeDepthImageProcessor`, `DepthAnythingImageProcessor`) and its
post-processing, as transformers does: ZoeDepth's removes its padding and can average a mirrored run (`flip`, on by
default, as the original `infer_pil`); Depth Anything's only resizes the map to the image's size (transformers has
no flip average for it, nor does the original code: `flip=True` is refused, as are `uncertainty`, which needs
ZoeDepth's depth bins, and `routing="batch"`, which needs ZoeD-NK's two heads).

Shape buckets (why a folder of mixed sizes compiles a handful of times, not once per image): the processors map
every image to a shape rounded to a multiple (32 near 384x512 for ZoeDepth, 14 with one side near 518 for Depth
Anything), so images of the same aspect ratio share a shape whatever their resolution. Images are grouped by that
processed shape and run in batches; a batch is padded (with copies of its first image) up to the next power of
two, capped at `batch_size`. The model therefore compiles at most once per (processed shape, power-of-two batch
size), and padding never changes a result: with `routing="per_image"` (and for Depth Anything) each image's depth
depends only on itself. With `routing="batch"` (transformers' rule: one head chosen for the whole batch) padding
would take part in that choice, so those batches run unpadded, one compile per distinct batch size.

Several devices (data parallel): the estimator uses every local device by default. Parameters are replicated,
each batch is split over the devices along its first axis, and batches are padded (as above) up to a multiple
of the device count, the padding dropped from the results. The default batch size is one image per device.
With `routing="batch"`, a batch that does not divide the device count runs replicated (every device computes
all of it) rather than padded.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from zoedepth_jax.config import Dinov2Config
from zoedepth_jax.errors import ArgumentError
from zoedepth_jax.inference.depth_anything_processor import DepthAnythingImageProcessor
from zoedepth_jax.inference.depth_images import colorize_uncertainty, depth_preview
from zoedepth_jax.inference.images import load_image
from zoedepth_jax.inference.processor import DEPTH_ANYTHING_V1_METRIC_DEFAULTS, ImageProcessor, ZoeDepthImageProcessor
from zoedepth_jax.modeling.depth_anything import DepthAnythingForDepthEstimation
from zoedepth_jax.modeling.models import DepthModel
from zoedepth_jax.modeling.zoedepth import ZoeDepthForDepthEstimation
from zoedepth_jax.weights.dtypes import cast_to_compute_dtype
from zoedepth_jax.weights.loading import from_pretrained
from zoedepth_jax.weights.resolve import PREPROCESSOR_CONFIG_NAME, resolve

DEFAULT_MODEL = "Intel/zoedepth-nyu-kitti"  # indoor and outdoor: the router picks the head per image

# The key of the depth map in a result: meters, or a relative model's affine-invariant inverse depth.
METRIC_DEPTH_KEY = "predicted_depth"
RELATIVE_DEPTH_KEY = "predicted_relative_depth"

# The image processor of each model family.
PROCESSORS: dict[type, type[ImageProcessor]] = {
    ZoeDepthForDepthEstimation: ZoeDepthImageProcessor,
    DepthAnythingForDepthEstimation: DepthAnythingImageProcessor,
}


def released_processor(model: DepthModel) -> ImageProcessor:
    """The processor the released checkpoints of `model`'s kind run with: Depth Anything V2's, Depth Anything V1
    metric's for ZoeDepth on DINOv2 (its only released weights; the patch-14 model needs sides that are multiples
    of 14) or the Intel/zoedepth-* ones."""
    if isinstance(model, ZoeDepthForDepthEstimation) and isinstance(model.config.backbone_config, Dinov2Config):
        return ZoeDepthImageProcessor.from_dict(DEPTH_ANYTHING_V1_METRIC_DEFAULTS)
    return PROCESSORS[type(model)]()


def is_relative(model: DepthModel) -> bool:
    """Whether `model` predicts relative depth (Depth Anything's relative models), not meters."""
    return isinstance(model, DepthAnythingForDepthEstimation) and model.config.depth_estimation_type == "relative"


def check_batch_size(batch_size: int) -> int:
    """`batch_size` if it is a whole number of images, at least one; else an ArgumentError."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ArgumentError(f"batch_size must be a whole number of images, at least 1, got {batch_size!r}")
    return batch_size


class PreparedImage(NamedTuple):
    """An image ready for the model: `pixel_values [1, H, W, 3]` and its source `(height, width)`."""

    pixel_values: np.ndarray
    source_size: tuple[int, int]


def _padded_batch_size(count: int, batch_size: int, num_devices: int) -> int:
    """The smallest power of two >= count, capped at batch_size (so few distinct batch shapes compile), then
    rounded up to a multiple of the device count."""
    padded = min(batch_size, 1 << max(0, count - 1).bit_length())
    return -(-padded // num_devices) * num_devices


class DepthEstimator:
    """Depth for images, with the model's processor, post-processing (and, for ZoeDepth, flip test-time
    augmentation) built in.

    Args:
        model: a hub id or checkpoint folder (anything `from_pretrained` reads: ZoeDepth or Depth Anything), or a
            `ZoeDepthForDepthEstimation` / `DepthAnythingForDepthEstimation` together with `variables`.
        variables: the parameters, when `model` is a module.
        processor: the image processor (`ZoeDepthImageProcessor` for ZoeDepth, `DepthAnythingImageProcessor` for
            Depth Anything); by default the checkpoint's `preprocessor_config.json` when it has one, else the
            released settings of the model's family.
        flip: also run the horizontally flipped image and average the two (the original `infer_pil` does).
            Default: on for ZoeDepth; Depth Anything has no flip average (transformers' and the original code run
            each image once), and flip=True is refused for it.
        batch_size: images per model call (default: one per device); see the module docstring for padding.
        dtype: compute dtype of the backbone and neck (`jnp.float32`, the default, or `jnp.bfloat16`); with
            bf16, the weights used only in bf16 are stored in it (identical outputs, see `weights.dtypes`). For a
            module passed in, None keeps the module's own.
        routing: "per_image" (the default) or "batch", for models with several heads (nyu-kitti). For a module
            passed in, None keeps the module's own. Depth Anything has one head and takes only "per_image".
        uncertainty: also return each pixel's `depth_std` (the model's `with_uncertainty=True`), post-processed
            as the depth is (a flip average combines the two as a mixture). ZoeDepth only: it comes from the
            distribution over its depth bins.
        keep_aspect_ratio: overrides the processor's resize rule: True (the released setting, the original's
            "infer" mode) keeps the aspect ratio; False resizes every image to the processor's fixed size (the
            original's "eval" mode; 384x512 for ZoeDepth, 518x518 for Depth Anything).
        devices: the devices to run on, data parallel (default: all of this process's devices).
    """

    def __init__(
        self,
        model: str | os.PathLike | DepthModel = DEFAULT_MODEL,
        variables: dict | None = None,
        *,
        processor: ImageProcessor | None = None,
        flip: bool | None = None,
        batch_size: int | None = None,
        dtype=None,
        routing: str | None = None,
        devices: Sequence[jax.Device] | None = None,
        revision: str | None = None,
        cache_dir: str | None = None,
        uncertainty: bool = False,
        keep_aspect_ratio: bool | None = None,
    ):
        self.devices = list(devices) if devices is not None else jax.local_devices()
        if not self.devices:
            raise ArgumentError("devices is empty")
        batch_size = len(self.devices) if batch_size is None else check_batch_size(batch_size)
        folder = None
        if isinstance(model, tuple(PROCESSORS)):
            if variables is None:
                raise ArgumentError(f"a {type(model).__name__} module needs its `variables`")
            overrides = {"dtype": dtype}
            if isinstance(model, ZoeDepthForDepthEstimation):
                overrides["routing"] = routing
            elif routing not in (None, "per_image"):
                raise ArgumentError(
                    f"routing = {routing!r}: Depth Anything has a single head, there is nothing to route"
                )
            self.model = model.clone(**{name: value for name, value in overrides.items() if value is not None})
            variables = cast_to_compute_dtype(self.model, variables)  # from_pretrained does this when loading
        else:
            if variables is not None:
                raise ArgumentError("`variables` is only for a module; a checkpoint path or hub id brings its own")
            folder = resolve(model, revision, cache_dir)
            self.model, variables = from_pretrained(folder, dtype=dtype or jnp.float32, routing=routing or "per_image")
        zoedepth = isinstance(self.model, ZoeDepthForDepthEstimation)
        if not zoedepth and flip:
            raise ArgumentError(
                "flip=True: Depth Anything has no flip average (transformers' processor and pipeline, like the "
                "original code, run each image once); leave flip unset"
            )
        if not zoedepth and uncertainty:
            raise ArgumentError(
                "uncertainty=True needs ZoeDepth's distribution over depth bins; Depth Anything predicts depth only"
            )
        self.relative = is_relative(self.model)
        self.depth_key = RELATIVE_DEPTH_KEY if self.relative else METRIC_DEPTH_KEY  # the depth map's key in a result
        self._zoedepth = zoedepth
        self._pad_batches = not (zoedepth and self.model.routing == "batch")  # padding must not vote in the routing
        mesh = Mesh(np.array(self.devices), ("data",))
        self._split = NamedSharding(mesh, PartitionSpec("data"))  # batch axis over the devices
        self._replicated = NamedSharding(mesh, PartitionSpec())
        self.variables = jax.device_put(variables, self._replicated)
        self.processor = self._processor(processor, folder, keep_aspect_ratio)
        self.uncertainty = uncertainty
        self.flip = zoedepth if flip is None else flip
        self.batch_size = batch_size
        self.compile_count = 0  # how many times the model has been traced (one per new input shape)
        self._forward = jax.jit(self._traced_forward)

    def _processor(self, processor, folder, keep_aspect_ratio) -> ImageProcessor:
        """The processor given, else the checkpoint folder's preprocessor_config.json, else the released settings,
        of the class the model needs; with `keep_aspect_ratio` set when it is not None."""
        kind = PROCESSORS[type(self.model)]
        if processor is None and folder is not None and (folder / PREPROCESSOR_CONFIG_NAME).is_file():
            processor = kind.from_json_file(folder / PREPROCESSOR_CONFIG_NAME)
        processor = processor if processor is not None else released_processor(self.model)
        if not isinstance(processor, kind):
            raise ArgumentError(
                f"a {type(self.model).__name__} runs with a {kind.__name__}, got a {type(processor).__name__}"
            )
        if keep_aspect_ratio is not None:
            processor = kind.from_dict({**processor.to_dict(), "keep_aspect_ratio": keep_aspect_ratio})
        return processor

    def _traced_forward(self, variables, pixel_values):
        self.compile_count += 1  # runs only while jax traces, i.e. once per compiled shape
        if self.uncertainty:
            return self.model.apply(variables, pixel_values, with_uncertainty=True)
        return self.model.apply(variables, pixel_values)

    def __call__(self, images, progress=None) -> dict | list[dict]:
        """Depth for one image (returns a dict) or a list of images (returns a list of dicts, in order).

        An image is a PIL image, a numpy HWC array or a file path. Each result has the depth map (float32 numpy
        [H, W] at the image's own size) under `depth_key`: `predicted_depth` in meters, or for a relative model
        `predicted_relative_depth` (affine-invariant inverse depth, larger is nearer, no unit); and `depth`, a PIL
        greyscale image of the map scaled to 0..255 between its minimum and maximum, as transformers draws it (far
        is bright for meters, near is bright for relative depth). With `uncertainty=True` it also has `depth_std`
        (float32 [H, W], meters) and `depth_std_image` (a PIL picture of it). `progress`, if given, is called with
        the number of images just finished.
        """
        single = not isinstance(images, (list, tuple))
        results = self.predict([images] if single else list(images), progress)
        return results[0] if single else results

    def predict(self, images: Sequence, progress=None) -> list[dict]:
        """The list form of `__call__`. Every image is loaded and processed first: one that cannot be (an
        unreadable file, an unsupported mode, too small to pad) raises `ImageError` naming it, before any model
        call."""
        prepared = [self.prepare(image, name=_describe(image, k)) for k, image in enumerate(images)]
        results = self.predict_prepared(prepared, progress)
        for result in results:
            result["depth"] = depth_preview(result[self.depth_key])
            if "depth_std" in result:
                result["depth_std_image"] = colorize_uncertainty(result["depth_std"])
        return results

    def prepare(self, image, name: str | None = None) -> PreparedImage:
        """Loads and processes one image (raises `ImageError` naming `name` if it cannot)."""
        array = load_image(image, name=name)
        pixel_values = self.processor(array)["pixel_values"]  # [1, H, W, 3]
        return PreparedImage(pixel_values, array.shape[:2])

    def predict_prepared(self, prepared: Sequence[PreparedImage], progress=None) -> list[dict]:
        """`{depth_key: float32 [h, w]}` (and `"depth_std"` with `uncertainty`) at each image's source size, for
        prepared images, in order; they run batched by processed shape."""
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for k, item in enumerate(prepared):
            groups[item.pixel_values.shape].append(k)
        results: list[dict | None] = [None] * len(prepared)
        for indices in groups.values():
            for start in range(0, len(indices), self.batch_size):
                batch = indices[start : start + self.batch_size]
                for k, result in zip(batch, self._predict_batch([prepared[k] for k in batch]), strict=True):
                    results[k] = result
                if progress is not None:
                    progress(len(batch))
        return results

    def _predict_batch(self, batch: list[PreparedImage]) -> list[dict]:
        """Runs images of one processed shape; returns their post-processed maps at their source sizes."""
        pixel_values = np.concatenate([item.pixel_values for item in batch])
        count = len(batch)
        if self._pad_batches:
            padded = _padded_batch_size(count, self.batch_size, len(self.devices))
            pixel_values = np.concatenate([pixel_values, np.repeat(pixel_values[:1], padded - count, axis=0)])
        outputs = self._run(pixel_values, count)
        sizes = [item.source_size for item in batch]
        if not self._zoedepth:
            results = self.processor.post_process_depth_estimation(outputs, target_sizes=sizes)
        else:
            flipped = self._run(pixel_values[:, :, ::-1], count) if self.flip else None
            results = self.processor.post_process_depth_estimation(outputs, source_sizes=sizes, outputs_flipped=flipped)
        if self.relative:
            for result in results:
                result[RELATIVE_DEPTH_KEY] = result.pop(METRIC_DEPTH_KEY)
        return results

    def _run(self, pixel_values: np.ndarray, count: int):
        """The model's output for `pixel_values`, its arrays cut to the `count` real images, on the host."""
        split = len(pixel_values) % len(self.devices) == 0
        placed = jax.device_put(np.ascontiguousarray(pixel_values), self._split if split else self._replicated)
        output = self._forward(self.variables, placed)
        return jax.tree_util.tree_map(lambda array: np.asarray(array[:count]), output)


def _describe(image, index: int) -> str:
    return os.fspath(image) if isinstance(image, (str, os.PathLike)) else f"image #{index}"


def pipeline(model: str | os.PathLike = DEFAULT_MODEL, **options) -> DepthEstimator:
    """`DepthEstimator(model, **options)`: the transformers-style entry point, e.g. `pipeline("Intel/zoedepth-nyu")`
    or `pipeline("depth-anything/Depth-Anything-V2-Small-hf")`."""
    return DepthEstimator(model, **options)
