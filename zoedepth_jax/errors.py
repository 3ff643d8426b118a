"""The exceptions zoedepth-jax raises: one small hierarchy, messages that name what went wrong."""


class ZoeDepthError(Exception):
    """Base class of every error raised on purpose by zoedepth-jax."""


class ConfigError(ZoeDepthError, ValueError):
    """A configuration field is unknown, malformed, or asks for something this implementation does not support."""


class CheckpointError(ZoeDepthError):
    """A checkpoint cannot be found, read, or mapped exactly onto the model's parameters."""


class ImageError(ZoeDepthError, ValueError):
    """An input image cannot be used (mode, size, or content)."""
