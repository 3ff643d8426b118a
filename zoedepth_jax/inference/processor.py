"""ZoeDepth's image processor: transformers' `ZoeDepthImageProcessor` in numpy, without torch.

Pre-processing, in the order transformers' PIL-backed processor (`ZoeDepthImageProcessorPil`) applies it, each
step optional:
  rescale (x * rescale_factor, computed in float64, stored as float32)
  → reflect-pad by int(sqrt(h/2)*3) rows above and below and int(sqrt(w/2)*3) columns left and right
  → resize (torch's bilinear or bicubic with align_corners=True, on float32) to the size rule below
  → normalise ((x - mean) / std, float32).
Size rule: with keep_aspect_ratio, the scale of the two (size / padded size) closer to 1 is used for both axes;
each side is then rounded to the nearest multiple of ensure_multiple_of (numpy's round: halves go to even).
Output: `{"pixel_values": float32 [B, H, W, 3]}`, NHWC, where transformers gives NCHW.

Post-processing (`post_process_depth_estimation`) is transformers': average with the mirrored prediction of the
mirrored input, resize (bicubic, a = -0.75, align_corners=False) to the source size plus padding, remove the
padding, then resize to the target size.

Errors name the image (its path, or "image #k" for the k-th, from 0, of a batch) and give sizes as height x width.
Too small to pad (fewer than 5 pixels on a side, where the reflection would need more rows than the image has),
empty, or resizing to nothing: ImageError naming the image. (transformers' PIL-backed processor pads images
under 5 pixels with numpy's repeated reflection; its torchvision-backed one refuses them, as this module does.)

uint8 images with do_rescale=False: transformers resizes the uint8 array itself, with torch's fixed-point uint8
kernel that rounds the result back to integers; this module resizes in float32 (as transformers does for every
other input), so such outputs differ from transformers' by up to one 0..255 level before normalisation.

What the image processors share (options and their validation, the preprocessor_config.json form, batching, the
size rule, rescaling and normalisation) is here too: `ImageProcessor` and the functions beside it, which
`depth_anything_processor` builds Depth Anything's processor from.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from zoedepth_jax import ops
from zoedepth_jax.errors import ArgumentError, ConfigError, ImageError
from zoedepth_jax.inference.images import check_not_empty, load_image

# The processor settings of the Intel/zoedepth-* checkpoints (their preprocessor_config.json, without the
# image_processor_type key), in that file's form: resample is Pillow's code for bilinear.
RELEASED_DEFAULTS = {
    "do_pad": True,
    "do_resize": True,
    "size": {"height": 384, "width": 512},
    "resample": 2,
    "keep_aspect_ratio": True,
    "ensure_multiple_of": 32,
    "do_rescale": True,
    "rescale_factor": 0.00392156862745098,
    "do_normalize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
}
OPTION_NAMES = tuple(RELEASED_DEFAULTS)
# What Depth Anything V1's metric models ran with (LiheYoung/Depth-Anything @ 1d03336, metric_depth/zoedepth:
# models/base_models/depth_anything.py PrepForMidas, with the model config's img_size [392, 518] and the "infer"
# config's force_keep_ar): the least scaling that brings the image to 392x518 keeping its aspect ratio, sides
# rounded to multiples of 14, bilinear with aligned corners, ImageNet mean and std, and no padding.
DEPTH_ANYTHING_V1_METRIC_DEFAULTS = {
    **RELEASED_DEFAULTS,
    "do_pad": False,
    "size": {"height": 392, "width": 518},
    "ensure_multiple_of": 14,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
}

# Keys transformers writes into every preprocessor_config.json, or that carry nothing this processor uses:
# accepted by from_dict and ignored (images are always converted to RGB, so do_convert_rgb changes nothing).
IGNORED_CONFIG_KEYS = frozenset(
    {
        "image_processor_type",
        "processor_class",
        "_processor_class",
        "feature_extractor_type",
        "auto_map",
        "do_convert_rgb",
    }
)

_RESAMPLE_CODES = {"bilinear": 2, "bicubic": 3}  # Pillow's codes, which preprocessor_config.json stores
_RESIZE = {"bilinear": ops.resize_bilinear, "bicubic": ops.resize_bicubic}

# ZoeDepth's padding: int(sqrt(side / 2) * PAD_FACTOR) on each end of each axis (isl-org's default fh = fw = 3).
PAD_FACTOR = 3
MIN_PADDABLE_SIDE = 5  # the smallest side whose reflection padding fits inside it


def padding(height: int, width: int) -> tuple[int, int]:
    """Rows (top and bottom, each) and columns (left and right, each) ZoeDepth pads a height x width image by."""
    return int(math.sqrt(height / 2) * PAD_FACTOR), int(math.sqrt(width / 2) * PAD_FACTOR)


# ---------------------------------------------------------------------------------------------------- options
# Validators: (option name, value) -> the value as the processor stores it, or a ConfigError naming the option.


def bool_option(name, value):
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def positive_int_option(name, value):
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)) and value > 0:
        return int(value)
    raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def finite_option(name, value):
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and math.isfinite(value):
        return value
    raise ConfigError(f"{name} must be a finite number, got {value!r}")


def size_option(name, value):
    if isinstance(value, Mapping):
        if set(value) != {"height", "width"}:
            raise ConfigError(f"{name} must have exactly the keys 'height' and 'width', got {sorted(value)}")
        height, width = value["height"], value["width"]
    elif isinstance(value, numbers.Integral) and not isinstance(value, bool):
        height = width = value
    elif isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
        height, width = value
    else:
        raise ConfigError(f"{name} must be {{'height': h, 'width': w}}, (h, w) or an int, got {value!r}")
    return {
        "height": positive_int_option(f"{name}['height']", height),
        "width": positive_int_option(f"{name}['width']", width),
    }


def resample_option(codes: Mapping[str, int], processor: str):
    """A validator of `resample`: one of the modes in `codes` (name -> Pillow's code), given by name or by code
    (preprocessor_config.json stores the code); the processor stores the name."""

    def validate(name, value):
        if isinstance(value, str) and value.lower() in codes:
            return value.lower()
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            for mode, code in codes.items():
                if value == code:
                    return mode
        modes = [f"{mode!r} (Pillow code {code})" for mode, code in codes.items()]
        listed = ", ".join(modes[:-1]) + f" or {modes[-1]}"
        raise ConfigError(f"{name} must be {listed}, the modes {processor} resizes with, got {value!r}")

    return validate


def _multiple(name, value):
    # transformers 5.x's class default is 1/32 (a bug: it yields sizes like 384x61), so fractions are accepted
    # and treated as transformers treats them.
    if finite_option(name, value) > 0:
        return value
    raise ConfigError(f"{name} must be positive, got {value!r}")


def per_channel_option(name, value, nonzero=False):
    values = [value] * 3 if isinstance(value, numbers.Real) else value
    if isinstance(values, str) or not isinstance(values, Sequence) or len(values) != 3:
        raise ConfigError(f"{name} must be a number or three numbers (R, G, B), got {value!r}")
    values = tuple(float(finite_option(name, v)) for v in values)
    if nonzero and 0.0 in values:
        raise ConfigError(f"{name} must not contain 0, got {value!r}")
    return values


def std_option(name, value):
    return per_channel_option(name, value, nonzero=True)


_VALIDATORS = {
    "do_pad": bool_option,
    "do_resize": bool_option,
    "size": size_option,
    "resample": resample_option(_RESAMPLE_CODES, "transformers' ZoeDepth processor"),
    "keep_aspect_ratio": bool_option,
    "ensure_multiple_of": _multiple,
    "do_rescale": bool_option,
    "rescale_factor": finite_option,
    "do_normalize": bool_option,
    "image_mean": per_channel_option,
    "image_std": std_option,
}


def validated(options: Mapping, validators: Mapping) -> dict:
    """`options` checked by `validators` (option name -> validator); an unknown option is a ConfigError."""
    unknown = sorted(set(options) - set(validators))
    if unknown:
        raise ConfigError(f"unknown image processor option(s) {unknown}; the options are {list(validators)}")
    return {name: validators[name](name, value) for name, value in options.items()}


# ---------------------------------------------------------------------------------------------------- steps


class Plan(NamedTuple):
    """What pre-processing does to one image: its output size (H, W), and the reflection padding (rows above and
    below, columns left and right, each) applied first."""

    size: tuple[int, int]
    pad_rows: int = 0
    pad_columns: int = 0


def _resized_side(value: float, multiple) -> int:
    # transformers' constrain_to_multiple_of: round (halves to even), then truncation to int.
    return int(np.round(value / multiple) * multiple)


def resized_size(height: int, width: int, options: Mapping, name: str, described: str) -> tuple[int, int]:
    """The (H, W) a height x width image resizes to under transformers' size rule (DPT's
    `get_resize_output_image_size`, which ZoeDepth's copies): with keep_aspect_ratio, the scale of the two
    (size / side) closer to 1 is used for both axes ("scale as little as possible"); each side is then rounded to
    the nearest multiple of ensure_multiple_of. A side that rounds to 0 is an ImageError naming the image
    (`described` is its size as the error states it)."""
    target = options["size"]
    scale_height, scale_width = target["height"] / height, target["width"] / width
    if options["keep_aspect_ratio"]:
        if abs(1 - scale_width) < abs(1 - scale_height):
            scale_height = scale_width
        else:
            scale_width = scale_height
    multiple = options["ensure_multiple_of"]
    resized = _resized_side(scale_height * height, multiple), _resized_side(scale_width * width, multiple)
    if min(resized) <= 0:
        raise ImageError(
            f"{name}: {described} resizes to {resized[0]}x{resized[1]} under the size rule "
            f"(size {target['height']}x{target['width']}, keep_aspect_ratio {options['keep_aspect_ratio']}, "
            f"multiple of {multiple}); its aspect ratio is too extreme"
        )
    return resized


def rescaled(image: np.ndarray, factor: float) -> np.ndarray:
    """image * factor as transformers computes it: the product in float64, stored as float32 (for uint8, the
    table of its 256 values)."""
    if image.dtype == np.uint8:
        return (np.arange(256, dtype=np.float64) * factor).astype(np.float32)[image]
    return (image.astype(np.float64) * factor).astype(np.float32)


def normalized(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(image - mean) / std per channel, in float32 as transformers computes it. image: [H, W, 3]."""
    return (image - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)


# ---------------------------------------------------------------------------------------------------- processors


class ImageProcessor:
    """What the image processors share: options (validated; each can be overridden for one call as a keyword of
    `preprocess` / `processed_size`, None keeping the processor's value), the preprocessor_config.json form, and
    batching. A subclass states its options and transformers' name for it in the class attributes below, and
    implements `_plan` (the output size) and `_process` (one image)."""

    RELEASED_DEFAULTS: Mapping  # every option with the released checkpoints' value, in preprocessor_config.json's form
    VALIDATORS: Mapping  # option name -> validator
    RESAMPLE_CODES: Mapping[str, int]  # resample mode -> Pillow's code
    PROCESSOR_TYPE: str  # transformers' image_processor_type; "...Fast" and "...Pil" are accepted too
    DESCRIPTION: str  # how errors name the kind of processor
    IGNORED_CONFIG_KEYS: frozenset = IGNORED_CONFIG_KEYS

    def _set_options(self, given: Mapping) -> None:
        """Sets every option: those `given`, the others at their released value."""
        for name, value in validated({**self.RELEASED_DEFAULTS, **given}, self.VALIDATORS).items():
            setattr(self, name, value)

    # -------------------------------------------------------------------------------- configuration files

    @classmethod
    def from_dict(cls, config: Mapping):
        """From the content of a preprocessor_config.json. transformers' bookkeeping keys (image_processor_type,
        processor_class, ...) are ignored; any other unknown key is a ConfigError naming it."""
        if not isinstance(config, Mapping):
            raise ConfigError(f"an image processor config must be a JSON object, got {type(config).__name__}")
        kind = config.get("image_processor_type")
        if kind is not None and not (isinstance(kind, str) and kind.startswith(cls.PROCESSOR_TYPE)):
            raise ConfigError(
                f"image_processor_type is {kind!r}, not a {cls.DESCRIPTION} image processor ({cls.PROCESSOR_TYPE})"
            )
        options = {key: value for key, value in config.items() if key not in cls.IGNORED_CONFIG_KEYS}
        unknown = sorted(set(options) - set(cls.RELEASED_DEFAULTS))
        if unknown:
            raise ConfigError(
                f"unknown key(s) {unknown} in the image processor config; known: {list(cls.RELEASED_DEFAULTS)}"
            )
        return cls(**options)

    @classmethod
    def from_json_file(cls, path):
        """From a preprocessor_config.json file; a missing or malformed file is a ConfigError naming it."""
        try:
            with open(path, encoding="utf-8") as file:
                config = json.load(file)
        except OSError as error:
            raise ConfigError(f"{path}: cannot read the image processor config: {error}") from error
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path}: not valid JSON: {error}") from error
        try:
            return cls.from_dict(config)
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from error

    def to_dict(self) -> dict:
        """The preprocessor_config.json content (transformers reads it back, and so does `from_dict`)."""
        return {
            "image_processor_type": self.PROCESSOR_TYPE,
            **self._options({}),
            "size": dict(self.size),
            "resample": self.RESAMPLE_CODES[self.resample],
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self._options({}).items())})"

    def _options(self, overrides: Mapping) -> dict:
        """This processor's options with a call's overrides; an override of None keeps the processor's value."""
        overrides = {name: value for name, value in overrides.items() if value is not None}
        return {
            **{name: getattr(self, name) for name in self.RELEASED_DEFAULTS},
            **validated(overrides, self.VALIDATORS),
        }

    # -------------------------------------------------------------------------------- pre-processing

    def processed_size(self, height: int, width: int, **overrides) -> tuple[int, int]:
        """The (H, W) of the pixel values of a height x width image (raises ImageError where preprocess would)."""
        return self._plan(height, width, self._options(overrides), f"a {height}x{width} image").size

    def _plan(self, height: int, width: int, options: dict, name: str) -> Plan:
        """What pre-processing does to a height x width image, or the ImageError preprocess would raise."""
        raise NotImplementedError

    def _process(self, image: np.ndarray, options: dict, name: str) -> np.ndarray:
        """One RGB image [H, W, 3] (uint8 or float32) -> float32 [H', W', 3]."""
        raise NotImplementedError

    def preprocess(self, images, **overrides) -> dict:
        """`{"pixel_values": float32 [B, H, W, 3]}` for one image or a list of them (PIL images, arrays, paths;
        a 4-D array is a batch). Images that process to different shapes are an ImageError: they cannot be
        stacked (transformers cannot batch them either); process them one at a time."""
        options = self._options(overrides)
        if isinstance(images, (list, tuple)):
            items = list(images)
        elif isinstance(images, np.ndarray) and images.ndim == 4:
            items = list(images)
        else:
            items = [images]
        if not items:
            raise ImageError("no images given")
        names, processed = [], []
        for index, item in enumerate(items):
            name = os.fspath(item) if isinstance(item, (str, os.PathLike)) else f"image #{index}"
            names.append(name)
            processed.append(self._process(load_image(item, name=name), options, name))
        shapes = {array.shape[:2] for array in processed}
        if len(shapes) > 1:
            listing = "; ".join(f"{name}: {a.shape[0]}x{a.shape[1]}" for name, a in zip(names, processed, strict=True))
            raise ImageError(
                f"the images process to different shapes ({listing}) and cannot be stacked into one batch "
                "(transformers cannot batch them either): process them one at a time"
            )
        return {"pixel_values": np.stack(processed)}

    __call__ = preprocess


class ZoeDepthImageProcessor(ImageProcessor):
    """transformers' `ZoeDepthImageProcessor`, numerically (pixel values within 1e-5 of its PIL-backed version;
    see the module docstring for the steps and the input rules). Every option can be overridden for one call
    as a keyword of `preprocess` / `processed_size` (None keeps the processor's value).

    Every option left None takes the released checkpoints' setting (`RELEASED_DEFAULTS`), where transformers
    5.x's class defaults differ in `ensure_multiple_of` (1/32 there). `resample` is "bilinear" or "bicubic" (or
    Pillow's code, 2 or 3, as preprocessor_config.json stores it); `size` is {"height": h, "width": w}, (h, w) or
    an int; `image_mean` / `image_std` one number or three.
    """

    RELEASED_DEFAULTS = RELEASED_DEFAULTS
    VALIDATORS = _VALIDATORS
    RESAMPLE_CODES = _RESAMPLE_CODES
    PROCESSOR_TYPE = "ZoeDepthImageProcessor"  # also "...Fast" (transformers 4.x) and "...Pil" (5.x)
    DESCRIPTION = "ZoeDepth"

    def __init__(
        self,
        do_pad=None,
        do_resize=None,
        size=None,
        resample=None,
        keep_aspect_ratio=None,
        ensure_multiple_of=None,
        do_rescale=None,
        rescale_factor=None,
        do_normalize=None,
        image_mean=None,
        image_std=None,
    ):
        self._set_options(
            {name: value for name, value in locals().items() if name in OPTION_NAMES and value is not None}
        )

    # -------------------------------------------------------------------------------- pre-processing

    def _plan(self, height, width, options, name) -> Plan:
        check_not_empty(height, width, name, "size")
        pad_rows = pad_columns = 0
        if options["do_pad"]:
            pad_rows, pad_columns = padding(height, width)
            if pad_rows >= height or pad_columns >= width:
                raise ImageError(
                    f"{name}: {height}x{width} is too small for ZoeDepth's reflection padding ({pad_rows} rows, "
                    f"{pad_columns} columns on each side): images need at least {MIN_PADDABLE_SIDE} pixels on "
                    "each side, or pass do_pad=False"
                )
            height, width = height + 2 * pad_rows, width + 2 * pad_columns
        size = (height, width)
        if options["do_resize"]:
            size = resized_size(height, width, options, name, f"{height}x{width} (padded)")
        return Plan(size, pad_rows, pad_columns)

    def _process(self, image: np.ndarray, options: dict, name: str) -> np.ndarray:
        plan = self._plan(image.shape[0], image.shape[1], options, name)
        image = rescaled(image, options["rescale_factor"]) if options["do_rescale"] else image.astype(np.float32)
        if options["do_pad"]:
            rows, columns = plan.pad_rows, plan.pad_columns
            image = np.pad(image, ((rows, rows), (columns, columns), (0, 0)), mode="reflect")
        if options["do_resize"]:
            image = _RESIZE[options["resample"]](image, plan.size, align_corners=True, axes=(0, 1))
        if options["do_normalize"]:
            image = normalized(image, options["image_mean"], options["image_std"])
        return np.ascontiguousarray(image, dtype=np.float32)

    # -------------------------------------------------------------------------------- post-processing

    def post_process_depth_estimation(
        self, outputs, source_sizes=None, target_sizes=None, outputs_flipped=None, do_remove_padding=None
    ) -> list[dict]:
        """transformers' post-processing: `[{"predicted_depth": float32 [h, w]}]`, one per image, with
        `"depth_std"` beside it when the outputs carry `depth_std` (`with_uncertainty=True`).

        outputs: anything with `.predicted_depth [B, H, W]` (a ZoeDepthOutput; numpy or JAX arrays).
        outputs_flipped: the outputs for the horizontally mirrored input; the two are averaged. Their standard
            deviations combine as those of an equal mixture of the two predictions (see `mixture_of_two`).
        source_sizes: (height, width) of each original image: the prediction is resized (bicubic) to that size
            plus ZoeDepth's padding, and the padding removed. Required unless do_remove_padding is False.
        target_sizes: (height, width) to resize each result to afterwards (bicubic).
        do_remove_padding: defaults to this processor's do_pad.
        The standard deviation goes through the same resizes as the depth (clipped at 0, where bicubic
        overshoots). Argument mismatches raise ArgumentError (a ValueError, as transformers raises).
        """
        depth, std = depth_and_std(outputs, "outputs")
        if outputs_flipped is not None:
            flipped, flipped_std = depth_and_std(outputs_flipped, "outputs_flipped")
            if flipped.shape != depth.shape or (std is None) != (flipped_std is None):
                raise ArgumentError(
                    f"outputs and outputs_flipped must have the same shape and both carry depth_std or neither, "
                    f"got {depth.shape} and {flipped.shape}"
                )
            unflipped_std = None if flipped_std is None else flipped_std[:, :, ::-1]
            depth, std = mixture_of_two(depth, std, flipped[:, :, ::-1], unflipped_std)
        batch = depth.shape[0]
        target_sizes = sizes_per_image(target_sizes, batch, "target_sizes")
        if do_remove_padding is None:
            do_remove_padding = self.do_pad
        if source_sizes is None and do_remove_padding:
            raise ArgumentError(
                "source_sizes is needed to remove the padding: pass the (height, width) of each original image, "
                "or do_remove_padding=False"
            )
        source_sizes = sizes_per_image(source_sizes, batch, "source_sizes")

        def to_source(index: int, result: np.ndarray) -> np.ndarray:  # [H, W] -> [h, w] of image `index`
            if source_sizes is not None:
                height, width = source_sizes[index]
                rows, columns = padding(height, width) if do_remove_padding else (0, 0)
                result = ops.resize_bicubic(result, (height + 2 * rows, width + 2 * columns), False, axes=(0, 1))
                result = result[rows : rows + height, columns : columns + width]
            if target_sizes is not None:
                result = ops.resize_bicubic(result, target_sizes[index], False, axes=(0, 1))
            return np.ascontiguousarray(result, dtype=np.float32)

        results = [{"predicted_depth": to_source(index, depth[index])} for index in range(batch)]
        if std is not None:
            for index, result in enumerate(results):
                result["depth_std"] = np.maximum(to_source(index, std[index]), np.float32(0))
        return results


def mixture_of_two(mean_a, std_a, mean_b, std_b):
    """Mean and standard deviation of an equal mixture of two distributions given by theirs (std None: the means
    only): mean = (a + b) / 2, variance = (var_a + var_b) / 2 + ((a - b) / 2)^2. float32 arrays of one shape."""
    mean = (mean_a + mean_b) / np.float32(2)
    if std_a is None:
        return mean, None
    variance = (np.square(std_a) + np.square(std_b)) / np.float32(2) + np.square((mean_a - mean_b) / np.float32(2))
    return mean, np.sqrt(variance)


def depth_and_std(outputs, argument: str) -> tuple[np.ndarray, np.ndarray | None]:
    """`outputs.predicted_depth [B, H, W]` and `outputs.depth_std` (None when absent) as float32 numpy."""
    if not hasattr(outputs, "predicted_depth"):
        raise ArgumentError(f"{argument} must have a predicted_depth (a model's output), got {type(outputs).__name__}")
    depth = np.asarray(outputs.predicted_depth, dtype=np.float32)
    if depth.ndim != 3:
        raise ArgumentError(f"{argument}.predicted_depth must be [batch, height, width], got shape {depth.shape}")
    std = getattr(outputs, "depth_std", None)
    if std is not None:
        std = np.asarray(std, dtype=np.float32)
        if std.shape != depth.shape:
            raise ArgumentError(f"{argument}.depth_std has shape {std.shape}, predicted_depth {depth.shape}")
    return depth, std


def sizes_per_image(sizes, batch: int, argument: str) -> list[tuple[int, int]] | None:
    """A list of (height, width) per image, checked against the batch size."""
    if sizes is None:
        return None
    try:
        array = np.asarray(sizes)
    except ValueError:
        array = None
    if array is None or array.ndim != 2 or array.shape[1] != 2 or array.dtype.kind not in "iuf":
        raise ArgumentError(f"{argument} must be one (height, width) per image, got {sizes!r}")
    if len(array) != batch:
        raise ArgumentError(f"{argument} has {len(array)} entries for a batch of {batch} predicted depth maps")
    if not (np.issubdtype(array.dtype, np.integer) or (np.isfinite(array).all() and (array == np.round(array)).all())):
        raise ArgumentError(f"{argument} must hold whole numbers of pixels, got {sizes!r}")
    if (array <= 0).any():
        raise ArgumentError(f"{argument} must be positive, got {sizes!r}")
    return [(int(height), int(width)) for height, width in array]
