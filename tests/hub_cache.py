"""A hub cache laid out on disk, as huggingface_hub keeps it, so that hub ids resolve offline in tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

SNAPSHOT_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def lay_out_hub_cache(cache: Path, repo_id: str, snapshot: Path) -> None:
    """The folder layout huggingface_hub keeps for `repo_id`: blobs, a snapshot of symlinks to them, refs/main."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(SNAPSHOT_COMMIT)
    (repo / "blobs").mkdir()
    (repo / "snapshots" / SNAPSHOT_COMMIT).mkdir(parents=True)
    for i, file in enumerate(sorted(snapshot.iterdir())):
        blob = repo / "blobs" / f"{i:040x}"
        shutil.copy(file, blob)
        link = repo / "snapshots" / SNAPSHOT_COMMIT / file.name
        link.symlink_to(os.path.relpath(blob, link.parent))
