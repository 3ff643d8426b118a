"""The images the self-check runs on: the example photo, and the two COCO photos of transformers' ZoeDepth
integration tests (`expected.CATS`, `expected.SECOND_PHOTO`).

The COCO photos come, in this order of preference, from a folder given with `--fixtures` (for instance a
transformers checkout's `tests/fixtures/tests_samples/COCO`), from this package's cache folder, or from
transformers' repository at the commit the expected values were read from (not attempted when `HF_HUB_OFFLINE` is
set). A photo that cannot be had is reported with the reason, and the checks that need it are not run.
"""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

from zoedepth_jax.files import write_atomically
from zoedepth_jax.selfcheck.expected import CATS, FIXTURE_URL, SECOND_PHOTO, TRANSFORMERS_COMMIT

# The README's example photo, beside the package in a source checkout (the install the README describes).
EXAMPLE_PHOTO = Path(__file__).resolve().parents[2] / "assets" / "example.jpg"
DOWNLOAD_TIMEOUT_SECONDS = 20


def cache_folder() -> Path:
    """Where downloaded fixture photos are kept: $XDG_CACHE_HOME (or ~/.cache)/zoedepth-jax/transformers-<commit>."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "zoedepth-jax" / f"transformers-{TRANSFORMERS_COMMIT[:12]}"


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _download(name: str, destination: Path) -> None:
    with urllib.request.urlopen(FIXTURE_URL.format(name), timeout=DOWNLOAD_TIMEOUT_SECONDS) as response:
        payload = response.read()
    destination.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(destination, lambda temp: Path(temp).write_bytes(payload))


def fixture_photos(folder: Path | None) -> tuple[dict[str, Path], dict[str, str]]:
    """`({name: path}, {name: why it is missing})` for the two COCO photos."""
    found, missing = {}, {}
    for name in (CATS, SECOND_PHOTO):
        if folder is not None:
            path = folder / name
            if path.is_file():
                found[name] = path
            else:
                missing[name] = f"{path} does not exist"
            continue
        cached = cache_folder() / name
        if cached.is_file():
            found[name] = cached
        elif _offline():
            missing[name] = "offline (HF_HUB_OFFLINE is set) and not in the cache; pass --fixtures DIR"
        else:
            try:
                _download(name, cached)
                found[name] = cached
            except OSError as e:  # URLError, timeouts and HTTP errors are OSErrors
                missing[name] = f"could not download {FIXTURE_URL.format(name)}: {e}; pass --fixtures DIR"
    return found, missing
