"""Writing files so that a crash or a full disk never leaves a half-written one behind, and none is overwritten
unless that was asked for."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path

from zoedepth_jax.errors import OutputExistsError


def refuse_to_overwrite(paths: Iterable[Path], overwrite: bool) -> None:
    """Raises an OutputExistsError naming every one of `paths` that exists, unless `overwrite`."""
    existing = [str(path) for path in paths if Path(path).exists()]
    if existing and not overwrite:
        raise OutputExistsError(
            f"not overwriting {', '.join(existing)} (pass overwrite=True, or --overwrite on the command line)"
        )


def write_atomically(path: Path, write: Callable[[str], None]) -> None:
    """Calls `write(temp_path)` for a temporary file beside `path`, syncs it, then renames it over `path`.

    The temporary file is created with the usual permissions (0666 less the umask), as a plain `open` would,
    so the result is readable like any other output (`tempfile.mkstemp` would leave it private, 0600).
    """
    temp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    os.close(os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        write(str(temp))
        with open(temp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
