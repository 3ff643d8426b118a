"""Where OpenVINO's time goes on the same model: its own per-node counters, grouped by part of the model.

    python benchmarks/openvino_stages.py [--checkpoint DIR] [--precision default|f32] [--runs 5] [--json FILE]

Converts the transformers model (released nyu-kitti architecture, re-drawn weights, built if `--checkpoint` is
absent) as cpu_peers.py does, compiles it for "CPU" with PERF_COUNT on, runs `--runs` forwards after a warm-up,
and reads each node's time from the run with the median total. Nodes are grouped by the stage their name comes
from (patch_embed, attention, mlp, neck, relative_head, metric_head, other) and by kernel (OpenVINO's layer type
and the implementation it chose, e.g. `brgconv_avx512_bf16`); GFLOP/s = 2 x multiply-adds of the MatMul,
FullyConnected and Convolution nodes and the fused attention of a group / their time, from the shapes of the
compiled (runtime) model.
This is the peer's side of the by-part comparison in RESULTS.md. Needs the `bench` extra.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_model_and_input_arguments, checkpoint_and_images  # noqa: E402

# (substring of an OpenVINO node name, stage), first match wins; the names carry the torch module path
# (transformers 5.x: `backbone.beit.layers.N.attention.q_proj`, `.mlp.fc1`, ...). OpenVINO names a fused node
# after its last operation: the attention output projection and fc2 end in the layer scales, `aten::mul/Multiply`
# (lambda_1) and `Multiply_1` (lambda_2).
STAGE_OF_NAME = (
    ("metric_head.", "metric_head"),
    ("relative_head.", "relative_head"),
    ("neck.", "neck"),
    ("embeddings", "patch_embed"),
    ("layernorm_before", "attention"),
    (".attention", "attention"),
    ("/aten::mul/Multiply_1", "mlp"),
    ("/aten::mul/Multiply", "attention"),
    ("layernorm_after", "mlp"),
    (".mlp.", "mlp"),
)
DENSE_TYPES = ("MatMul", "FullyConnected", "Convolution", "GroupConvolution", "Deconvolution")


def stage_of(name: str) -> str:
    return next((stage for key, stage in STAGE_OF_NAME if key in name), "other")


def dense_gflop(node) -> float:
    """2 x multiply-adds of one MatMul / FullyConnected / (Group)Convolution / fused attention node of the runtime
    model, else 0."""
    info = node.get_rt_info()
    layer_type = info["layerType"].astype(str)
    out = [int(d) for d in node.get_output_partial_shape(0).to_shape()]
    fused_from = info["originalLayersNames"].astype(str) if "originalLayersNames" in info else node.get_friendly_name()
    if "scaled_dot_product_attention" in fused_from:
        # Fused self-attention (named after its last operation: `ScaledDotProductAttention`, or a transpose in
        # f32): q k^T and weights v over N tokens, N the largest non-batch dimension of the output
        # ([B, heads, N, d] or [B, N, heads, d]; tokens outnumber heads and head width for any real input).
        return 2 * 2 * float(np.prod(out)) * max(out[1:]) / 1e9
    if layer_type not in DENSE_TYPES:
        return 0.0
    data = [int(d) for d in node.input_value(0).get_partial_shape().to_shape()]
    if layer_type in ("MatMul", "FullyConnected"):
        return 2 * float(np.prod(out)) * data[-1] / 1e9
    weights = [int(d) for d in node.input_value(1).get_partial_shape().to_shape()]
    if layer_type == "Deconvolution":  # weights [C_in, C_out, kh, kw]: every input pixel paints a kh x kw block
        return 2 * float(np.prod(data)) * float(np.prod(weights[1:])) / 1e9
    # Convolution: weights [C_out, C_in, kh, kw]; GroupConvolution: [groups, C_out/g, C_in/g, kh, kw]
    return 2 * float(np.prod(out)) * float(np.prod(weights[-3:])) / 1e9


def profile(folder: Path, images: np.ndarray, precision_f32: bool, runs: int) -> dict:
    import openvino as ov
    import torch
    from cpu_peers import load_transformers_model

    with torch.no_grad():
        ov_model = ov.convert_model(load_transformers_model(folder), example_input=torch.from_numpy(images))
    ov_model.reshape(list(images.shape))
    config = {"PERF_COUNT": "YES"}
    if precision_f32:
        config[ov.properties.hint.inference_precision] = ov.Type.f32
    compiled = ov.Core().compile_model(ov_model, "CPU", config)
    del ov_model
    request = compiled.create_infer_request()
    request.infer({0: images})  # warm-up
    per_run = []
    for _ in range(runs):
        request.infer({0: images})
        per_run.append(
            {p.node_name: (p.node_type, p.exec_type, p.real_time.total_seconds()) for p in request.profiling_info}
        )
    totals = [sum(t for _, _, t in run.values()) for run in per_run]
    chosen = per_run[totals.index(statistics.median_low(totals))]
    gflop = {node.get_friendly_name(): dense_gflop(node) for node in compiled.get_runtime_model().get_ordered_ops()}

    by_stage = defaultdict(lambda: {"s": 0.0, "dense_s": 0.0, "dense_gflop": 0.0})
    by_kernel = defaultdict(lambda: {"s": 0.0, "gflop": 0.0, "nodes": 0})
    for name, (node_type, exec_type, seconds) in chosen.items():
        stage = by_stage[stage_of(name)]
        stage["s"] += seconds
        work = gflop.get(name, 0.0)
        if work:
            stage["dense_s"] += seconds
            stage["dense_gflop"] += work
        kernel = by_kernel[f"{stage_of(name)} | {node_type} | {exec_type}"]
        kernel["s"] += seconds
        kernel["gflop"] += work
        kernel["nodes"] += 1
    return {
        "precision": str(compiled.get_property(ov.properties.hint.inference_precision)),
        "nodes": [
            [name, node_type, exec_type, seconds, gflop.get(name, 0.0)]
            for name, (node_type, exec_type, seconds) in chosen.items()
        ],
        "run_totals_s": totals,
        "by_stage": dict(by_stage),
        "by_kernel": dict(sorted(by_kernel.items(), key=lambda item: -item[1]["s"])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_and_input_arguments(parser)
    parser.add_argument("--precision", default="default", choices=["default", "f32"])
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder, images = checkpoint_and_images(args, Path(tmp))
        result = profile(folder, images, args.precision == "f32", args.runs)

    print(f"OpenVINO ({result['precision']}), run totals (s): {[round(t, 3) for t in result['run_totals_s']]}")
    print("| stage | s | MatMul/Conv/attention s | GFLOP | GFLOP/s |\n|---|---|---|---|---|")
    for stage, row in sorted(result["by_stage"].items(), key=lambda item: -item[1]["s"]):
        rate = row["dense_gflop"] / row["dense_s"] if row["dense_s"] else 0.0
        print(f"| {stage} | {row['s']:.3f} | {row['dense_s']:.3f} | {row['dense_gflop']:.1f} | {rate:.0f} |")
    print("\n| stage, layer type, kernel | s | nodes | GFLOP/s |\n|---|---|---|---|")
    for kernel, row in list(result["by_kernel"].items())[:25]:
        rate = f"{row['gflop'] / row['s']:.0f}" if row["gflop"] and row["s"] else ""
        print(f"| {kernel} | {row['s']:.3f} | {row['nodes']} | {rate} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
