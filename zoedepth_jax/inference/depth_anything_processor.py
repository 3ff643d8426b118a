"""Depth Anything's image processor: transformers' `DPTImageProcessor` as the Depth Anything checkpoints configure it,
in numpy and Pillow, without torch.

Settings (`RELEASED_DEFAULTS`). transformers' conversion script for Depth Anything V1 and V2
(`src/transformers/models/depth_anything/convert_depth_anything_to_hf.py`, commit 23925e16) builds
`DPTImageProcessor(do_resize=True, size={"height": 518, "width": 518}, ensure_multiple_of=14, keep_aspect_ratio=True,
do_rescale=True, do_normalize=True, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])` and saves it
beside every converted checkpoint (`depth-anything/Depth-Anything-V2-{Small,Base,Large}-hf`, the Metric-Indoor and
Metric-Outdoor ones, `LiheYoung/depth-anything-*-hf`); its other fields are that class's defaults: resample 3
(bicubic), rescale_factor 1/255, do_pad false. The preprocessor_config.json of Depth-Anything-V2-Small-hf at
revision 32d03942 (as a project that pins it copies it) holds exactly these values, plus transformers 4.x's
bookkeeping (`_valid_processor_keys`, `size_divisor: null`). transformers 5.x's class defaults differ in size
(384x384), ensure_multiple_of (1), keep_aspect_ratio (false) and image_mean / image_std (0.5): those are not used.

Pre-processing, in the order transformers' PIL-backed processor (`DPTImageProcessorPil`) applies it, each step
optional:
  resize with Pillow (`Image.resize`, bicubic by default) to the size rule below
  → rescale (x * rescale_factor, computed in float64, stored as float32)
  → normalise ((x - mean) / std, float32).
Size rule: that of `processor.resized_size` (the one ZoeDepth's processor uses; transformers' DPT
`get_resize_output_image_size`): with keep_aspect_ratio, the side whose scale to 518 is closer to 1 reaches it ("scale
as little as possible") and the other keeps the aspect ratio; each side is then rounded to the nearest multiple of
14 (halves to even). transformers' `constrain_to_multiple_of` takes a min_val (0) and max_val (None) that this rule
never sets, so rounding is all it does; a side that rounds to 0 is an ImageError here (Pillow refuses the resize in
transformers). Examples: 480x640 → 518x686, 1080x1920 → 518x924, 100x300 → 168x518 (the width's scale, 1.73, is
closer to 1 than the height's, 5.18). The original Depth Anything code resizes differently (its "lower_bound"
rule: the larger of the two scales, so that both sides are at least 518, with OpenCV's bicubic); this module
follows transformers, whose checkpoints these are.
Output: `{"pixel_values": float32 [B, H, W, 3]}`, NHWC, where transformers gives NCHW.

8-bit images (uint8 arrays, 8-bit PIL images and files) are resized exactly as transformers resizes them, by Pillow
on the 8-bit image (its result rounded to 8 bits), so the pixel values are transformers' bit for bit. Images with
more precision (16-bit, float; `images.load_image` states how they are read) are resized per channel in Pillow's
32-bit float mode, with the same filter, neither rounded to 8 bits nor clipped to 0..255; transformers converts them
to 8 bits first. The two agree to within rounding where the picture is smooth; at sharp edges the bicubic filter
overshoots, which the 8-bit result clips and the float one keeps (the example photo given as float: up to 14 levels
of 255, 99.9% of the values within 2.3).

transformers' torchvision-backed `DPTImageProcessor` (the default in 5.x when torchvision is installed, the
`...Fast` class in 4.x) resizes the uint8 tensor with torch's antialiased bicubic: the same filter (Keys, a = -0.5,
widened when shrinking, as Pillow's) with other fixed-point rounding. Measured with torch 2.13 on noise images:
up to 2 levels of 255 on under 1% of the values, so up to 0.035 in normalised pixel values; its fused rescale and
normalise round differently in float32 (~1e-7).

Post-processing (`post_process_depth_estimation`) is transformers' DPT one: each map resized (bicubic, a = -0.75,
align_corners=False, as torch's interpolate) to its target size, when one is given. There is nothing else: no
padding to remove and no flip average (transformers' depth-estimation pipeline passes each image's own size).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from zoedepth_jax import ops
from zoedepth_jax.errors import ConfigError
from zoedepth_jax.inference.images import check_not_empty
from zoedepth_jax.inference.processor import (
    IGNORED_CONFIG_KEYS,
    ImageProcessor,
    Plan,
    bool_option,
    depth_and_std,
    finite_option,
    normalized,
    per_channel_option,
    positive_int_option,
    resample_option,
    rescaled,
    resized_size,
    size_option,
    sizes_per_image,
    std_option,
)

# The released settings (see the module docstring), in preprocessor_config.json's form: resample is Pillow's code
# for bicubic.
RELEASED_DEFAULTS = {
    "do_resize": True,
    "size": {"height": 518, "width": 518},
    "resample": 3,
    "keep_aspect_ratio": True,
    "ensure_multiple_of": 14,
    "do_rescale": True,
    "rescale_factor": 0.00392156862745098,
    "do_normalize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
    "do_pad": False,
}
OPTION_NAMES = tuple(RELEASED_DEFAULTS)

# Pillow's filters, by the name and code preprocessor_config.json may give; transformers' PIL-backed processor
# passes any of them to Pillow, and so does this one.
_RESAMPLE_CODES = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}

# Besides the keys every processor ignores: transformers 4.x's list of call arguments, the divisor of do_pad's
# padding (which must be off), and do_reduce_labels, which applies to segmentation maps only.
_IGNORED_CONFIG_KEYS = IGNORED_CONFIG_KEYS | {"_valid_processor_keys", "size_divisor", "do_reduce_labels"}


def _no_padding(name, value):
    if bool_option(name, value):
        raise ConfigError(
            f"{name} = true (zero padding to a multiple of size_divisor) is not supported: the Depth Anything "
            "checkpoints' processors leave it off, and transformers' depth post-processing does not remove it"
        )
    return False


_VALIDATORS = {
    "do_resize": bool_option,
    "size": size_option,
    "resample": resample_option(_RESAMPLE_CODES, "Pillow"),
    "keep_aspect_ratio": bool_option,
    "ensure_multiple_of": positive_int_option,
    "do_rescale": bool_option,
    "rescale_factor": finite_option,
    "do_normalize": bool_option,
    "image_mean": per_channel_option,
    "image_std": std_option,
    "do_pad": _no_padding,
}


def _resize_with_pillow(image: np.ndarray, size: tuple[int, int], resample: str) -> np.ndarray:
    """[H, W, 3] -> [h, w, 3] by Pillow's `Image.resize`: uint8 as an RGB image (uint8 result, as transformers
    resizes), anything else per channel as 32-bit float images (float32 result)."""
    height, width = size
    code = _RESAMPLE_CODES[resample]
    if image.dtype == np.uint8:
        return np.asarray(Image.fromarray(image).resize((width, height), resample=code))
    channels = [np.ascontiguousarray(image[:, :, c], dtype=np.float32) for c in range(image.shape[2])]
    resized = [np.asarray(Image.fromarray(channel).resize((width, height), code)) for channel in channels]
    return np.stack(resized, axis=-1)


class DepthAnythingImageProcessor(ImageProcessor):
    """transformers' `DPTImageProcessor` with the Depth Anything checkpoints' settings: pixel values identical to
    its PIL-backed version for 8-bit images (see the module docstring for the steps and the other inputs). Every
    option can be overridden for one call as a keyword of `preprocess` / `processed_size` (None keeps the
    processor's value).

    Every option left None takes the released setting (`RELEASED_DEFAULTS`). `resample` is one of Pillow's filters
    by name ("bicubic", "bilinear", "lanczos", "nearest", "box", "hamming") or code (as preprocessor_config.json
    stores it); `size` is {"height": h, "width": w}, (h, w) or an int; `ensure_multiple_of` a positive integer;
    `image_mean` / `image_std` one number or three. `do_pad` must be false.
    """

    RELEASED_DEFAULTS = RELEASED_DEFAULTS
    VALIDATORS = _VALIDATORS
    RESAMPLE_CODES = _RESAMPLE_CODES
    PROCESSOR_TYPE = "DPTImageProcessor"  # also "...Fast" (transformers 4.x) and "...Pil" (5.x)
    DESCRIPTION = "Depth Anything (DPT)"
    IGNORED_CONFIG_KEYS = _IGNORED_CONFIG_KEYS

    def __init__(
        self,
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
        do_pad=None,
    ):
        self._set_options(
            {name: value for name, value in locals().items() if name in OPTION_NAMES and value is not None}
        )

    def _plan(self, height, width, options, name) -> Plan:
        check_not_empty(height, width, name, "size")
        if options["do_resize"]:
            return Plan(resized_size(height, width, options, name, f"{height}x{width}"))
        return Plan((height, width))

    def _process(self, image: np.ndarray, options: dict, name: str) -> np.ndarray:
        size = self._plan(image.shape[0], image.shape[1], options, name).size
        if options["do_resize"]:
            image = _resize_with_pillow(image, size, options["resample"])
        image = rescaled(image, options["rescale_factor"]) if options["do_rescale"] else image.astype(np.float32)
        if options["do_normalize"]:
            image = normalized(image, options["image_mean"], options["image_std"])
        return np.ascontiguousarray(image, dtype=np.float32)

    def post_process_depth_estimation(self, outputs, target_sizes=None) -> list[dict]:
        """transformers' post-processing: `[{"predicted_depth": float32 [h, w]}]`, one per image.

        outputs: anything with `.predicted_depth [B, H, W]` (a DepthAnythingOutput; numpy or JAX arrays).
        target_sizes: (height, width) per image to resize its map to (bicubic); None leaves the maps at the
            model's output size. Argument mismatches raise ArgumentError (a ValueError, as transformers raises).
        """
        depth, _ = depth_and_std(outputs, "outputs")
        target_sizes = sizes_per_image(target_sizes, depth.shape[0], "target_sizes")
        results = []
        for index, result in enumerate(depth):  # [H, W]
            if target_sizes is not None:
                result = ops.resize_bicubic(result, target_sizes[index], False, axes=(0, 1))
            results.append({"predicted_depth": np.ascontiguousarray(result, dtype=np.float32)})
        return results
