"""Images as the model reads them: any accepted input as an RGB array, with errors that name the image.

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
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from zoedepth_jax.errors import ImageError

_CONVERTED_BY_PILLOW = frozenset({"1", "L", "LA", "P", "PA", "RGBA", "RGBX", "CMYK", "YCbCr"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_SUPPORTED_MODES = ("RGB", *sorted(_CONVERTED_BY_PILLOW), *sorted(_SIXTEEN_BIT_MODES), "I", "F")
_SIXTEEN_BIT_TO_8 = np.float32(257)  # 65535 / 255


def check_not_empty(height: int, width: int, name: str, what: str) -> None:
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
    check_not_empty(height, width, name, f"mode {mode},")
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
    check_not_empty(array.shape[0], array.shape[1], name, f"array of shape {array.shape},")
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
