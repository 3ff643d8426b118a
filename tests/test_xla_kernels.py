"""benchmarks/xla_kernels.py on the tiny model: the traced ops' times add up to the forward's, and the FLOPs it
reads off the compiled HLO are the model's, counted once per executed loop step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import reference

pytestmark = pytest.mark.bench

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "xla_kernels.py"
sys.path.insert(0, str(SCRIPT.parent))
import xla_kernels  # noqa: E402


def test_attributed_times_share_overlaps_and_count_gaps():
    shares, span, idle = xla_kernels.attributed_times([(0.0, 2.0, "a"), (1.0, 3.0, "b"), (4.0, 5.0, "a")])
    assert shares == {"a": 1.5 + 1.0, "b": 0.5 + 1.0}  # [1, 2) shared by a and b
    assert (span, idle) == (5.0, 1.0)


def test_quick_profile_accounts_for_the_forward_and_its_flops(tmp_path):
    out = tmp_path / "kernels.json"
    subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", str(out)],
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        check=True,
        capture_output=True,
        timeout=600,
    )
    result = json.loads(out.read_text())
    parts = result["by_part"]
    attributed = sum(part["seconds"] for part in parts.values())
    assert abs(attributed + result["idle_s"] - result["span_s"]) <= 1e-6 * max(result["span_s"], 1.0)
    assert result["span_s"] > 0 and result["wall_s"] > 0  # (tracing slows a tiny forward: no ratio between them)

    backbone = reference.hf_config("nyu-kitti").backbone_config
    batch, (height, width) = result["batch"], result["input_hw"]
    tokens = (height // backbone.patch_size) * (width // backbone.patch_size) + 1
    layers, hidden, heads = backbone.num_hidden_layers, backbone.hidden_size, backbone.num_attention_heads
    mlp = 2 * batch * tokens * hidden * backbone.intermediate_size * 2 * layers  # fc1 + fc2
    projections = 2 * batch * tokens * hidden * hidden * 4 * layers  # q, k, v, output
    scores_and_context = 2 * batch * heads * tokens * tokens * (hidden // heads) * 2 * layers
    expected = {
        "backbone: MLP matmuls": mlp,
        "backbone: q, k, v and output projections": projections,
        "backbone: attention core (scores, softmax, context)": scores_and_context,
    }
    for part, flops in expected.items():
        assert abs(parts[part]["gflop"] * 1e9 - flops) <= 1e-6 * flops, (part, parts[part]["gflop"], flops / 1e9)
        assert parts[part]["seconds"] > 0
    for part in ("neck (matmuls, convolutions)", "relative head (matmuls, convolutions)", "metric heads and router"):
        assert any(name.startswith(part) for name in parts), part
    assert result["by_op"] and all(row["seconds"] >= 0 for row in result["by_op"].values())
