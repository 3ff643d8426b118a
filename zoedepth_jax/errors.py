"""The exceptions zoedepth-jax raises: one small hierarchy, messages that name what went wrong.

Each also derives from the built-in exception a Python caller would expect for its kind of problem (ValueError,
TypeError, FileExistsError), so `except ValueError` keeps working around library calls.
"""


class ZoeDepthError(Exception):
    """Base class of every error raised on purpose by zoedepth-jax."""


class ConfigError(ZoeDepthError, ValueError):
    """A configuration field is unknown, malformed, or asks for something this implementation does not support."""


class ArgumentError(ZoeDepthError, ValueError, TypeError):
    """An argument of a library call is of the wrong kind, out of range, or does not fit the other arguments.
    Callers that catch ValueError or TypeError around a call catch it too."""


class CheckpointError(ZoeDepthError):
    """A checkpoint cannot be found, read, or mapped exactly onto the model's parameters."""


class ImageError(ZoeDepthError, ValueError):
    """An input image cannot be used (mode, size, or content)."""


class OutputExistsError(ZoeDepthError, FileExistsError):
    """An output file exists already and overwriting it was not asked for."""


class ConfigWarning(UserWarning):
    """A config.json field zoedepth-jax does not know: the model is built without it, and it is kept."""
