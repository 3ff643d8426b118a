"""zoedepth-jax: ZoeDepth metric monocular depth (and Depth Anything) in JAX/Flax, numerically identical to
transformers."""

from zoedepth_jax.config import BeitConfig, BinConfiguration, DepthAnythingConfig, Dinov2Config, ZoeDepthConfig
from zoedepth_jax.errors import (
    ArgumentError,
    CheckpointError,
    ConfigError,
    ImageError,
    OutputExistsError,
    ZoeDepthError,
)
from zoedepth_jax.geometry.points import depth_to_points
from zoedepth_jax.inference.depth_anything_processor import DepthAnythingImageProcessor
from zoedepth_jax.inference.estimator import DepthEstimator, pipeline
from zoedepth_jax.inference.images import load_image
from zoedepth_jax.inference.processor import ZoeDepthImageProcessor
from zoedepth_jax.modeling.depth_anything import DepthAnythingForDepthEstimation, DepthAnythingOutput
from zoedepth_jax.modeling.zoedepth import ZoeDepthForDepthEstimation, ZoeDepthOutput, apply_with_intermediates
from zoedepth_jax.weights.loading import from_pretrained, save_pretrained

__all__ = [
    "ArgumentError",
    "BeitConfig",
    "BinConfiguration",
    "CheckpointError",
    "ConfigError",
    "DepthAnythingConfig",
    "DepthAnythingForDepthEstimation",
    "DepthAnythingImageProcessor",
    "DepthAnythingOutput",
    "DepthEstimator",
    "Dinov2Config",
    "ImageError",
    "OutputExistsError",
    "ZoeDepthConfig",
    "ZoeDepthError",
    "ZoeDepthForDepthEstimation",
    "ZoeDepthImageProcessor",
    "ZoeDepthOutput",
    "apply_with_intermediates",
    "depth_to_points",
    "from_pretrained",
    "load_image",
    "pipeline",
    "save_pretrained",
]
