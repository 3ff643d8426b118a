"""Helpers the benchmark scripts share: the benchmark model, its inputs, and the depth error against a reference.

The model is the released nyu-kitti architecture (BEiT-L/16 at 384, neck 256/512/1024/1024) with re-drawn weights,
built through transformers by `tests/reference.py`, so that every runtime loads the same `save_pretrained` folder.
Importing this module puts `tests/` on the import path for `reference`.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))


def build_checkpoint(folder: Path, variant: str = "nyu-kitti", full: bool = True) -> None:
    """A `save_pretrained` folder of `variant` with re-drawn weights: the released architecture, or with
    `full=False` the tiny test architecture."""
    import reference

    reference.build(variant, folder, seed=0, full=full)


def add_model_and_input_arguments(parser: argparse.ArgumentParser) -> None:
    """--checkpoint, --runs, --batch, --height, --width and --json, as xla_kernels.py and openvino_stages.py take."""
    parser.add_argument("--checkpoint", type=Path, help="a save_pretrained folder; built (nyu-kitti, full) if absent")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--json", type=Path)


def checkpoint_and_images(args: argparse.Namespace, scratch: Path) -> tuple[Path, np.ndarray]:
    """The checkpoint folder (`--checkpoint`, built there when it holds no config.json, or in `scratch` when not
    given) and the input images [B, 3, H, W] float32."""
    import reference

    folder = args.checkpoint
    if folder is None or not (folder / "config.json").exists():
        folder = folder or scratch / "checkpoint"
        build_checkpoint(folder)
    return folder, reference.test_images(args.batch, args.height, args.width, seed=1)


def relative_errors(depth: np.ndarray, reference_depth: np.ndarray) -> dict[str, float]:
    """Per pixel |depth - reference| / reference, its median and max (depth is positive)."""
    reference_depth = np.asarray(reference_depth, np.float64)
    error = np.abs(np.asarray(depth, np.float64) - reference_depth) / reference_depth
    return {"median": float(np.median(error)), "max": float(error.max())}


def machine_facts() -> dict:
    """The CPU (model, core counts, the ISA flags that decide bf16 speed) and memory, from /proc."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    flags = set(re.search(r"^flags\s*:(.*)$", cpuinfo, re.MULTILINE).group(1).split())
    cores = set(re.findall(r"^physical id\s*:\s*(\d+)\s*$.*?^core id\s*:\s*(\d+)", cpuinfo, re.MULTILINE | re.DOTALL))
    memory_kib = int(re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text()).group(1))
    return {
        "cpu_model": re.search(r"^model name\s*:\s*(.*)$", cpuinfo, re.MULTILINE).group(1),
        "logical_cpus": os.cpu_count(),
        "physical_cores": len(cores) or None,
        "cpu_flags": {flag: flag in flags for flag in ("amx_tile", "amx_bf16", "avx512_bf16", "avx512f")},
        "memory_total_gib": memory_kib / 2**20,
    }


def commit() -> str | None:
    """The checkout's commit hash (with "+changes" when the tree differs from it), or None outside git."""

    def git(*arguments: str) -> str:
        return subprocess.run(["git", *arguments], cwd=ROOT, capture_output=True, text=True, check=True).stdout

    try:
        head, changes = git("rev-parse", "HEAD"), git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.strip() + ("+changes" if changes.strip() else "")


def process_memory_mib() -> dict[str, float]:
    """This process's resident memory now (VmRSS) and its peak so far (VmHWM), in MiB, from /proc/self/status."""
    status = Path("/proc/self/status").read_text()
    return {
        name: int(re.search(rf"{field}:\s+(\d+) kB", status).group(1)) / 1024
        for name, field in (("rss", "VmRSS"), ("peak", "VmHWM"))
    }
