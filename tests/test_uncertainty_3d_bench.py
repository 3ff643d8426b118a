"""benchmarks/uncertainty_3d.py on the tiny model: it runs end to end and reports every figure it promises."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import uncertainty_3d  # noqa: E402


def test_quick_run_reports_forward_and_file_times(tmp_path):
    result = uncertainty_3d.main(["--quick", "--runs", "2", "--json", str(tmp_path / "out.json")])
    forward = result["forward_fp32"]
    assert set(forward["median_s"]) == {"default", "with_uncertainty"}
    assert all(len(runs) == 2 and min(runs) > 0 for runs in forward["runs_s"].values())
    files = result["files_3d"]
    assert set(files["median_s"]) == {"points", "edge_mask", "ply", "glb"}
    assert 0 < files["kept_points"] < 48 * 64  # the box's edges are dropped, the rest kept
    assert files["bytes"]["ply"] > 12 * files["kept_points"] and files["bytes"]["glb"] > 0
    assert (tmp_path / "out.json").stat().st_size > 0 and result["machine"]["cpu_model"]
