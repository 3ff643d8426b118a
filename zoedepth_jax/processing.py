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

Inputs and how they become RGB (`load_image`):
  - PIL images: "RGB" as is. "RGBA", "RGBX", "LA", "PA": alpha (or padding) dropped, not composited. "L", "1",
    "P", "CMYK", "YCbCr": Pillow's conversion to RGB (greyscale replicated, palette looked up, CMYK and YCbCr by
    Pillow's formulas, no ICC profile). For 8-bit modes this is exactly what transformers does with a path
    (`load_image` converts to RGB); given a non-RGB image object, transformers fails (its normalisation sees 1,
    2 or 4 channels) or, for YCbCr, silently reads Y, Cb, Cr as R, G, B.
    16-bit ("I;16", "I;16L", "I;16B", "I;16N") and mode "I" (32-bit integer, which older Pillow versions and
    some formats use for 16-bit greyscale): a value v becomes v/257 as float32, so the 16-bit range 0..65535
    maps onto the 0..255 scale the rescale factor expects (8-bit content stored in 16 bits, v = 257u, comes back
    as u exactly); mode "I" values outside 0..65535 are an ImageError. "F" (32-bit float): values taken as they
    are, on the 0..255 scale like float arrays. Greyscale is replicated to three channels. transformers, given
    these modes through a path, clips them to 0..255 with Pillow's conversion (a 16-bit image turns mostly
    white); this module deliberately does not. Any other mode ("I;16S", "LAB", "HSV", "RGBa", ...) is an ImageError.
  - numpy arrays (anything with `__array__`): [H, W] or [H, W, C], channels last, C = 1 (grey), 2 (grey + alpha),
    3 (RGB) or 4 (RGBA); alpha dropped as above. uint8 as is; bool as 0/255 (like mode "1"); uint16 as 16-bit
    (v/257, like "I;16"); other integer types must hold values in 0..255 and are read as 8-bit; float arrays
    (float16/32/64) become float32 and are taken as values on the 0..255 scale, neither clipped nor rescaled,
    which is what transformers assumes too (it multiplies whatever it gets by rescale_factor): pass
    do_rescale=False for float images already in [0, 1]. Non-finite floats are an ImageError.
  - paths (str or os.PathLike): opened with Pillow (the first frame of multi-frame files), EXIF orientation
    applied, then the mode rules above. transformers applies the EXIF orientation to paths (its `load_image`
    calls `ImageOps.exif_transpose`) and not to image objects or arrays; so does this module.
Errors name the image (its path, or "image #k" for the k-th, from 0, of a batch) and give sizes as height x width.
Too small to pad (fewer than 5 pixels on a side, where the reflection would need more rows than the image has),
empty, or resizing to nothing: ImageError naming the image. (transformers' PIL-backed processor pads images
under 5 pixels with numpy's repeated reflection; its torchvision-backed one refuses them, as this module does.)

uint8 images with do_rescale=False: transformers resizes the uint8 array itself, with torch's fixed-point uint8
kernel that rounds the result back to integers; this module resizes in float32 (as transformers does for every
other input), so such outputs differ from transformers' by up to one 0..255 level before normalisation.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from zoedepth_jax import ops
from zoedepth_jax.errors import ConfigError, ImageError

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
_PROCESSOR_TYPE = "ZoeDepthImageProcessor"  # also "...Fast" (transformers 4.x) and "...Pil" (5.x)

_RESAMPLE_CODES = {"bilinear": 2, "bicubic": 3}  # Pillow's codes, which preprocessor_config.json stores
_RESIZE = {"bilinear": ops.resize_bilinear, "bicubic": ops.resize_bicubic}

# ZoeDepth's padding: int(sqrt(side / 2) * PAD_FACTOR) on each end of each axis (isl-org's default fh = fw = 3).
PAD_FACTOR = 3
MIN_PADDABLE_SIDE = 5  # the smallest side whose reflection padding fits inside it

_CONVERTED_BY_PILLOW = frozenset({"1", "L", "LA", "P", "PA", "RGBA", "RGBX", "CMYK", "YCbCr"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_SUPPORTED_MODES = ("RGB", *sorted(_CONVERTED_BY_PILLOW), *sorted(_SIXTEEN_BIT_MODES), "I", "F")
_SIXTEEN_BIT_TO_8 = np.float32(257)  # 65535 / 255


def padding(height: int, width: int) -> tuple[int, int]:
    """Rows (top and bottom, each) and columns (left and right, each) ZoeDepth pads a height x width image by."""
    return int(math.sqrt(height / 2) * PAD_FACTOR), int(math.sqrt(width / 2) * PAD_FACTOR)


# ---------------------------------------------------------------------------------------------------- options


def _bool(name, value):
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def _positive_int(name, value):
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)) and value > 0:
        return int(value)
    raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def _finite(name, value):
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and math.isfinite(value):
        return value
    raise ConfigError(f"{name} must be a finite number, got {value!r}")


def _size(name, value):
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
    return {"height": _positive_int(f"{name}['height']", height), "width": _positive_int(f"{name}['width']", width)}


def _resample(name, value):
    if isinstance(value, str) and value.lower() in _RESAMPLE_CODES:
        return value.lower()
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        for mode, code in _RESAMPLE_CODES.items():
            if value == code:
                return mode
    raise ConfigError(
        f"{name} must be 'bilinear' (Pillow code 2) or 'bicubic' (3), the two transformers' ZoeDepth processor "
        f"resizes with, got {value!r}"
    )


def _multiple(name, value):
    # transformers 5.x's class default is 1/32 (a bug: it yields sizes like 384x61), so fractions are accepted
    # and treated as transformers treats them.
    if _finite(name, value) > 0:
        return value
    raise ConfigError(f"{name} must be positive, got {value!r}")


def _per_channel(name, value, nonzero=False):
    values = [value] * 3 if isinstance(value, numbers.Real) else value
    if isinstance(values, str) or not isinstance(values, Sequence) or len(values) != 3:
        raise ConfigError(f"{name} must be a number or three numbers (R, G, B), got {value!r}")
    values = tuple(float(_finite(name, v)) for v in values)
    if nonzero and 0.0 in values:
        raise ConfigError(f"{name} must not contain 0, got {value!r}")
    return values


_VALIDATORS = {
    "do_pad": _bool,
    "do_resize": _bool,
    "size": _size,
    "resample": _resample,
    "keep_aspect_ratio": _bool,
    "ensure_multiple_of": _multiple,
    "do_rescale": _bool,
    "rescale_factor": _finite,
    "do_normalize": _bool,
    "image_mean": _per_channel,
    "image_std": lambda name, value: _per_channel(name, value, nonzero=True),
}


def _validated(options: Mapping) -> dict:
    unknown = sorted(set(options) - set(_VALIDATORS))
    if unknown:
        raise ConfigError(f"unknown image processor option(s) {unknown}; the options are {list(OPTION_NAMES)}")
    return {name: _VALIDATORS[name](name, value) for name, value in options.items()}


# ---------------------------------------------------------------------------------------------------- images


def _zero_size_check(height: int, width: int, name: str, what: str) -> None:
    if height == 0 or width == 0:
        raise ImageError(f"{name}: the image is empty ({what} {height}x{width})")


def _sixteen_bit(values: np.ndarray) -> np.ndarray:
    return values.astype(np.float32) / _SIXTEEN_BIT_TO_8


def _to_rgb_channels(array: np.ndarray) -> np.ndarray:
    """[H, W, C] with C = 1..4 -> [H, W, 3]: grey replicated, alpha dropped."""
    channels = array.shape[2]
    if channels in (1, 2):
        return np.repeat(array[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3])


def _from_pil(image: Image.Image, name: str) -> np.ndarray:
    mode, (width, height) = image.mode, image.size
    _zero_size_check(height, width, name, f"mode {mode},")
    if mode == "RGB":
        return np.array(image)
    if mode in _CONVERTED_BY_PILLOW:
        return np.array(image.convert("RGB"))
    if mode in _SIXTEEN_BIT_MODES:
        return _to_rgb_channels(_sixteen_bit(np.array(image))[:, :, None])
    if mode == "I":
        values = np.array(image)
        low, high = int(values.min()), int(values.max())
        if low < 0 or high > 65535:
            raise ImageError(
                f"{name}: mode I ({height}x{width}) with values {low}..{high}: only 0..65535 (16-bit) has a "
                "defined brightness scale; convert it to 8 or 16 bits, or pass a float array on the 0..255 scale"
            )
        return _to_rgb_channels(_sixteen_bit(values)[:, :, None])
    if mode == "F":
        return _to_rgb_channels(_finite_floats(np.array(image, dtype=np.float32), name)[:, :, None])
    raise ImageError(
        f"{name}: unsupported image mode {mode!r} ({height}x{width}); supported modes: {', '.join(_SUPPORTED_MODES)}"
    )


def _finite_floats(array: np.ndarray, name: str) -> np.ndarray:
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise ImageError(f"{name}: the image has non-finite values (NaN or infinity)")
    return array


def _from_array(array: np.ndarray, name: str) -> np.ndarray:
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or not 1 <= array.shape[2] <= 4:
        hint = ""
        if array.ndim == 3 and array.shape[0] in (1, 3, 4):
            hint = " (channels first? transpose it to [H, W, C])"
        raise ImageError(
            f"{name}: expected an array [H, W] or [H, W, C] with 1 to 4 channels last, got shape {array.shape}{hint}"
        )
    _zero_size_check(array.shape[0], array.shape[1], name, f"array of shape {array.shape},")
    dtype = array.dtype
    if dtype == np.uint8:
        pass
    elif dtype == np.bool_:
        array = array.astype(np.uint8) * np.uint8(255)
    elif dtype == np.uint16:
        array = _sixteen_bit(array)
    elif np.issubdtype(dtype, np.integer):
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise ImageError(
                f"{name}: {dtype} array with values {low}..{high}: integer arrays other than uint16 are read as "
                "8-bit (0..255); pass uint8, uint16 (16-bit) or a float array on the 0..255 scale"
            )
        array = array.astype(np.uint8)
    elif np.issubdtype(dtype, np.floating):
        array = _finite_floats(array, name)
    else:
        raise ImageError(f"{name}: unsupported array dtype {dtype}; expected uint8, uint16, another integer or float")
    return _to_rgb_channels(array)


def _open(path: str, name: str) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()
            return ImageOps.exif_transpose(image)
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{name}: is a directory, not an image file") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: cannot read the file: not an image format Pillow recognises") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
        raise ImageError(f"{name}: cannot read the image: {type(error).__name__}: {error}") from error


def load_image(image, name: str | None = None) -> np.ndarray:
    """Any accepted input as an RGB array [H, W, 3]: uint8 from 8-bit sources, float32 (on the 0..255 scale)
    from 16-bit, float and 32-bit-integer ones. The rules per mode and dtype are in this module's docstring.

    `name` is how errors refer to the image (default: the path, or "image"). Raises ImageError for an unreadable
    or corrupt file, a mode or dtype without a rule, an empty image or an array of the wrong shape.
    """
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        name = name or path
        if isinstance(path, str) and path.startswith(("http://", "https://")):
            raise ImageError(f"{name}: URLs are not read; download the image and pass its path")
        return _from_pil(_open(path, name), name)
    name = name or "image"
    if isinstance(image, Image.Image):
        return _from_pil(image, name)
    if isinstance(image, np.ndarray) or hasattr(image, "__array__"):
        return _from_array(np.asarray(image), name)
    raise ImageError(f"{name}: cannot use a {type(image).__name__} as an image; pass a PIL image, an array or a path")


# ---------------------------------------------------------------------------------------------------- processor


def _resized_side(value: float, multiple) -> int:
    # transformers' constrain_to_multiple_of: numpy's round (halves to even), then truncation to int.
    return int(np.round(value / multiple) * multiple)


class ZoeDepthImageProcessor:
    """transformers' `ZoeDepthImageProcessor`, numerically (pixel values within 1e-5 of its PIL-backed version;
    see the module docstring for the steps and the input rules). Every option can be overridden for one call
    as a keyword of `preprocess` / `processed_size` (None keeps the processor's value).

    The constructor's defaults are the released checkpoints' settings (`RELEASED_DEFAULTS`), where transformers
    5.x's class defaults differ in `ensure_multiple_of` (1/32 there). `resample` is "bilinear" or "bicubic" (or
    Pillow's code, 2 or 3, as preprocessor_config.json stores it); `size` is {"height": h, "width": w}, (h, w) or
    an int; `image_mean` / `image_std` one number or three.
    """

    def __init__(
        self,
        do_pad=True,
        do_resize=True,
        size=None,
        resample="bilinear",
        keep_aspect_ratio=True,
        ensure_multiple_of=32,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=(0.5, 0.5, 0.5),
        image_std=(0.5, 0.5, 0.5),
    ):
        options = _validated(
            dict(
                do_pad=do_pad,
                do_resize=do_resize,
                size={"height": 384, "width": 512} if size is None else size,
                resample=resample,
                keep_aspect_ratio=keep_aspect_ratio,
                ensure_multiple_of=ensure_multiple_of,
                do_rescale=do_rescale,
                rescale_factor=rescale_factor,
                do_normalize=do_normalize,
                image_mean=image_mean,
                image_std=image_std,
            )
        )
        self.do_pad: bool = options["do_pad"]
        self.do_resize: bool = options["do_resize"]
        self.size: dict = options["size"]
        self.resample: str = options["resample"]
        self.keep_aspect_ratio: bool = options["keep_aspect_ratio"]
        self.ensure_multiple_of = options["ensure_multiple_of"]
        self.do_rescale: bool = options["do_rescale"]
        self.rescale_factor: float = options["rescale_factor"]
        self.do_normalize: bool = options["do_normalize"]
        self.image_mean: tuple = options["image_mean"]
        self.image_std: tuple = options["image_std"]

    # -------------------------------------------------------------------------------- configuration files

    @classmethod
    def from_dict(cls, config: Mapping) -> ZoeDepthImageProcessor:
        """From the content of a preprocessor_config.json. transformers' bookkeeping keys (image_processor_type,
        processor_class, ...) are ignored; any other unknown key is a ConfigError naming it."""
        if not isinstance(config, Mapping):
            raise ConfigError(f"an image processor config must be a JSON object, got {type(config).__name__}")
        kind = config.get("image_processor_type")
        if kind is not None and not (isinstance(kind, str) and kind.startswith(_PROCESSOR_TYPE)):
            raise ConfigError(f"image_processor_type is {kind!r}, not a ZoeDepth image processor ({_PROCESSOR_TYPE})")
        options = {key: value for key, value in config.items() if key not in IGNORED_CONFIG_KEYS}
        unknown = sorted(set(options) - set(OPTION_NAMES))
        if unknown:
            raise ConfigError(f"unknown key(s) {unknown} in the image processor config; known: {list(OPTION_NAMES)}")
        return cls(**options)

    @classmethod
    def from_json_file(cls, path) -> ZoeDepthImageProcessor:
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
            "image_processor_type": _PROCESSOR_TYPE,
            **self._options({}),
            "size": dict(self.size),
            "resample": _RESAMPLE_CODES[self.resample],
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self._options({}).items())})"

    def _options(self, overrides: Mapping) -> dict:
        """This processor's options with a call's overrides; an override of None keeps the processor's value."""
        overrides = {name: value for name, value in overrides.items() if value is not None}
        return {**{name: getattr(self, name) for name in OPTION_NAMES}, **_validated(overrides)}

    # -------------------------------------------------------------------------------- pre-processing

    def processed_size(self, height: int, width: int, **overrides) -> tuple[int, int]:
        """The (H, W) of the pixel values of a height x width image (raises ImageError where preprocess would)."""
        return self._planned_size(height, width, self._options(overrides), f"a {height}x{width} image")[2]

    def _planned_size(self, height, width, options, name) -> tuple[int, int, tuple[int, int]]:
        """(pad rows, pad columns, output size) for an image, or the ImageError preprocess would raise."""
        _zero_size_check(height, width, name, "size")
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
        if options["do_resize"]:
            target = options["size"]
            scale_height, scale_width = target["height"] / height, target["width"] / width
            if options["keep_aspect_ratio"]:  # the scale closer to 1 for both axes ("scale as little as possible")
                if abs(1 - scale_width) < abs(1 - scale_height):
                    scale_height = scale_width
                else:
                    scale_width = scale_height
            multiple = options["ensure_multiple_of"]
            resized = _resized_side(scale_height * height, multiple), _resized_side(scale_width * width, multiple)
            if min(resized) <= 0:
                raise ImageError(
                    f"{name}: {height}x{width} (padded) resizes to {resized[0]}x{resized[1]} under the size rule "
                    f"(size {target['height']}x{target['width']}, keep_aspect_ratio {options['keep_aspect_ratio']}, "
                    f"multiple of {multiple}); its aspect ratio is too extreme"
                )
            height, width = resized
        return pad_rows, pad_columns, (height, width)

    def _process(self, image: np.ndarray, options: dict, name: str) -> np.ndarray:
        """One RGB image [H, W, 3] (uint8 or float32) -> float32 [H', W', 3]."""
        pad_rows, pad_columns, size = self._planned_size(image.shape[0], image.shape[1], options, name)
        if options["do_rescale"]:
            if image.dtype == np.uint8:  # the 256 values transformers computes (float64 product, float32 result)
                table = (np.arange(256, dtype=np.float64) * options["rescale_factor"]).astype(np.float32)
                image = table[image]
            else:
                image = (image.astype(np.float64) * options["rescale_factor"]).astype(np.float32)
        else:
            image = image.astype(np.float32)
        if options["do_pad"]:
            image = np.pad(image, ((pad_rows, pad_rows), (pad_columns, pad_columns), (0, 0)), mode="reflect")
        if options["do_resize"]:
            image = _RESIZE[options["resample"]](image, size, align_corners=True, axes=(0, 1))
        if options["do_normalize"]:
            mean = np.asarray(options["image_mean"], dtype=np.float32)
            std = np.asarray(options["image_std"], dtype=np.float32)
            image = (image - mean) / std
        return np.ascontiguousarray(image, dtype=np.float32)

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

    # -------------------------------------------------------------------------------- post-processing

    def post_process_depth_estimation(
        self, outputs, source_sizes=None, target_sizes=None, outputs_flipped=None, do_remove_padding=None
    ) -> list[dict]:
        """transformers' post-processing: `[{"predicted_depth": float32 [h, w]}]`, one per image.

        outputs: anything with `.predicted_depth [B, H, W]` (a ZoeDepthOutput; numpy or JAX arrays).
        outputs_flipped: the outputs for the horizontally mirrored input; the two are averaged.
        source_sizes: (height, width) of each original image: the prediction is resized (bicubic) to that size
            plus ZoeDepth's padding, and the padding removed. Required unless do_remove_padding is False.
        target_sizes: (height, width) to resize each result to afterwards (bicubic).
        do_remove_padding: defaults to this processor's do_pad.
        Argument mismatches raise ValueError, where transformers does.
        """
        depth = _predicted_depth(outputs, "outputs")
        flipped = None
        if outputs_flipped is not None:
            flipped = _predicted_depth(outputs_flipped, "outputs_flipped")
            if flipped.shape != depth.shape:
                raise ValueError(
                    f"outputs and outputs_flipped must have the same shape, got {depth.shape} and {flipped.shape}"
                )
        batch = depth.shape[0]
        target_sizes = _sizes(target_sizes, batch, "target_sizes")
        if do_remove_padding is None:
            do_remove_padding = self.do_pad
        if source_sizes is None and do_remove_padding:
            raise ValueError(
                "source_sizes is needed to remove the padding: pass the (height, width) of each original image, "
                "or do_remove_padding=False"
            )
        source_sizes = _sizes(source_sizes, batch, "source_sizes")
        if flipped is not None:
            depth = (depth + flipped[:, :, ::-1]) / np.float32(2)
        results = []
        for index in range(batch):
            result = depth[index]
            if source_sizes is not None:
                height, width = source_sizes[index]
                rows, columns = padding(height, width) if do_remove_padding else (0, 0)
                result = ops.resize_bicubic(result, (height + 2 * rows, width + 2 * columns), False, axes=(0, 1))
                result = result[rows : rows + height, columns : columns + width]
            if target_sizes is not None:
                result = ops.resize_bicubic(result, target_sizes[index], False, axes=(0, 1))
            results.append({"predicted_depth": np.ascontiguousarray(result, dtype=np.float32)})
        return results


def _predicted_depth(outputs, argument: str) -> np.ndarray:
    if not hasattr(outputs, "predicted_depth"):
        raise TypeError(f"{argument} must have a predicted_depth (a ZoeDepthOutput), got {type(outputs).__name__}")
    depth = np.asarray(outputs.predicted_depth, dtype=np.float32)
    if depth.ndim != 3:
        raise ValueError(f"{argument}.predicted_depth must be [batch, height, width], got shape {depth.shape}")
    return depth


def _sizes(sizes, batch: int, argument: str) -> list[tuple[int, int]] | None:
    """A list of (height, width) per image, checked against the batch size."""
    if sizes is None:
        return None
    try:
        array = np.asarray(sizes)
    except ValueError:
        array = None
    if array is None or array.ndim != 2 or array.shape[1] != 2 or array.dtype.kind not in "iuf":
        raise ValueError(f"{argument} must be one (height, width) per image, got {sizes!r}")
    if len(array) != batch:
        raise ValueError(f"{argument} has {len(array)} entries for a batch of {batch} predicted depth maps")
    if not (np.issubdtype(array.dtype, np.integer) or (np.isfinite(array).all() and (array == np.round(array)).all())):
        raise ValueError(f"{argument} must hold whole numbers of pixels, got {sizes!r}")
    if (array <= 0).any():
        raise ValueError(f"{argument} must be positive, got {sizes!r}")
    return [(int(height), int(width)) for height, width in array]
