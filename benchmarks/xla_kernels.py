"""Where one jitted zoedepth-jax forward spends its time, kernel by kernel, with the rates of its matmuls.

    python benchmarks/xla_kernels.py [--checkpoint DIR] [--dtype float32|bfloat16] [--batch 1] [--runs 3]
                                     [--height 384 --width 512] [--top 30] [--json FILE]
    python benchmarks/xla_kernels.py --quick [--json FILE]    # tiny test model: checks the script

Method: `jax.jit(model.apply)` is compiled, warmed up and timed over `--runs` forwards (the wall time: their
median), then `--runs` forwards are traced with `jax.profiler.trace`, each in a trace of its own (the later
forwards of one trace run slower), and the trace of median span is reported. Every XLA op of the compiled program
that shows in the trace (a fusion, XLA:CPU's YNNPACK call for a dot or convolution, a copy, one step of a loop
body) is an interval of time. XLA:CPU runs independent ops at the same time (the q, k and v projections of a
layer), so summing their durations counts the overlap twice; here each instant of the trace is shared equally among
the ops running then, and the attributed times add up to the forward's wall time less the gaps between ops. Each op
is named after the model code that emitted it (the `op_name` metadata of the compiled HLO, layer numbers folded:
`backbone/encoder/layer_N/intermediate/dense`), and its multiply-adds come from the shapes of the dots and
convolutions it contains (GFLOP = 2 x multiply-adds), so that a matmul's rate is its FLOPs over its attributed
time. The "by part" table groups the ops into the parts of the model; "by op" lists the costliest. Loop wrappers
(`while`) are left out: their body ops are traced.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import math
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_model_and_input_arguments, build_checkpoint, checkpoint_and_images  # noqa: E402

# `%name = f32[769,1024]{1,0} opcode(operands), attributes`; tuple-shaped results (loops) are `(s32[], ...)`.
INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%(?P<name>\S+) = (?P<shape>\(.*?\)|\S+) (?P<opcode>[\w-]+)\((?P<args>.*)$")
ARRAY_SHAPE = re.compile(r"^[a-z]+\d*\[(?P<dims>[\d,]*)\]")
WRAPPER_OPCODES = {"while", "conditional", "call"}


def dims_of(shape: str) -> list[int] | None:
    """`f32[769,1024]{1,0}` -> [769, 1024]; None for tuples and tokens."""
    match = ARRAY_SHAPE.match(shape)
    if match is None:
        return None
    return [int(d) for d in match["dims"].split(",") if d]


def matmul_flops(opcode: str, line: str, out_dims: list[int], dims: dict[str, list[int] | None]) -> float:
    """2 x multiply-adds of one `dot` or `convolution` instruction (0 for anything else)."""
    operands = re.findall(r"%([\w.-]+)", line.split(opcode + "(", 1)[1].split(")", 1)[0])
    if opcode == "dot":
        lhs = dims.get(operands[0])
        contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", line)
        if lhs is None or contracting is None:
            return 0.0
        depth = math.prod(lhs[int(i)] for i in contracting[1].split(",") if i)
        return 2.0 * math.prod(out_dims) * depth
    if opcode == "convolution":
        kernel = dims.get(operands[1])
        labels = re.search(r"dim_labels=\w+_(\w+)->", line)
        if kernel is None or labels is None:
            return 0.0
        outputs_per_tap = kernel[labels[1].index("o")]  # the kernel's output-feature dimension
        return 2.0 * math.prod(out_dims) * math.prod(kernel) / outputs_per_tap
    return 0.0


def read_hlo(text: str) -> dict[str, dict]:
    """Every instruction of a compiled HLO module: {name: {opcode, source, flops}}. A fusion's FLOPs are those of
    the dots and convolutions in the computation it calls; `source` is its `op_name` with the jit and model
    prefixes removed and layer numbers folded into N."""
    lines = {}  # name -> (opcode, the instruction's line)
    dims = {}  # name -> its result's dimensions (None for tuples)
    computations = collections.defaultdict(list)  # computation name -> instruction names
    current = None
    for line in text.splitlines():
        if not line.startswith(" ") and "{" in line and "(" in line:
            current = line.split(" ", 1)[0].lstrip("%")
            continue
        match = INSTRUCTION.match(line)
        if match is None:
            continue
        lines[match["name"]] = (match["opcode"], line)
        dims[match["name"]] = dims_of(match["shape"])
        computations[current].append(match["name"])

    def flops(name: str) -> float:
        opcode, line = lines[name]
        if opcode == "fusion":
            called = re.search(r"calls=%([\w.-]+)", line)
            return sum(flops(inner) for inner in computations.get(called[1], ())) if called else 0.0
        return matmul_flops(opcode, line, dims[name], dims) if dims[name] else 0.0

    callers = {}  # computation -> the instruction that runs it (a loop's body, a fusion, a call)
    for name, (_, line) in lines.items():
        for called in re.findall(r"(?:body|condition|calls|to_apply|branch_computations)=\{?%([\w.-]+)", line):
            callers.setdefault(called, name)
    computation_of = {name: computation for computation, names in computations.items() for name in names}

    def source(name: str) -> str:
        """The op's `op_name`, or, for the ops XLA created without one (some in loop bodies), its caller's."""
        op_name = re.search(r'op_name="([^"]*)"', lines[name][1])
        if op_name:
            return op_name[1]
        caller = callers.get(computation_of.get(name))
        return source(caller) if caller else ""

    instructions = {}
    for name, (opcode, _) in lines.items():
        path = re.sub(r"^(jit\([^)]*\)/)+", "", source(name))
        path = re.sub(r"^[A-Za-z]+ForDepthEstimation/", "", path)
        path = re.sub(r"(while/body/)?(closed_call/)?", "", re.sub(r"layer_\d+", "layer_N", path))
        instructions[name] = {"opcode": opcode, "source": path, "flops": flops(name)}
    return instructions


def attributed_times(intervals: list[tuple[float, float, str]]) -> tuple[dict[str, float], float, float]:
    """Shares each instant among the intervals covering it: ({name: seconds}, span seconds, idle seconds)."""
    edges = sorted(
        [(start, 1, i) for i, (start, _, _) in enumerate(intervals)]
        + [(end, -1, i) for i, (_, end, _) in enumerate(intervals)]
    )
    shares: dict[str, float] = collections.defaultdict(float)
    active: set[int] = set()
    idle, previous = 0.0, None
    for moment, change, index in edges:
        if previous is not None and moment > previous:
            if active:
                for j in active:
                    shares[intervals[j][2]] += (moment - previous) / len(active)
            else:
                idle += moment - previous
        previous = moment
        (active.add if change == 1 else active.discard)(index)
    span = edges[-1][0] - edges[0][0] if edges else 0.0
    return dict(shares), span, idle


def part_of(source: str, flops: float) -> str:
    """The part of the model an op belongs to, from its source path."""
    if source.startswith("backbone/encoder/"):
        if "/attention/attention/" in source and not re.search(r"/(query|key|value)/", source):
            return "backbone: attention core (scores, softmax, context)"
        if "/attention/" in source and flops:
            return "backbone: q, k, v and output projections"
        if re.search(r"/(intermediate|output)/dense/", source) and flops:
            return "backbone: MLP matmuls"
        return "backbone: other (LayerNorm, GELU, residual adds, layout)"
    for prefix, part in (
        ("backbone/", "backbone: patch embedding"),
        ("neck/", "neck"),
        ("relative_head/", "relative head"),
        ("metric_head/", "metric heads and router"),
    ):
        if source.startswith(prefix):
            return part if prefix == "backbone/" else part + (" (matmuls, convolutions)" if flops else " (other ops)")
    return "other"


def traced_intervals(compiled, args_tuple, trace_dir: Path) -> list[tuple[float, float, str]]:
    """Traces one call of `compiled`; returns the (start, end, name) of every traced event, in seconds."""
    import jax

    with jax.profiler.trace(str(trace_dir), create_perfetto_trace=True):
        jax.block_until_ready(compiled(*args_tuple))
    events = json.load(gzip.open(next(trace_dir.rglob("*perfetto_trace.json.gz"))))
    events = events["traceEvents"] if isinstance(events, dict) else events
    return [(e["ts"] / 1e6, (e["ts"] + e["dur"]) / 1e6, e["name"]) for e in events if e.get("ph") == "X" and "dur" in e]


def summarise(intervals, instructions: dict[str, dict], top: int) -> dict:
    """One traced forward, by op and by part of the model (seconds, GFLOP, calls)."""
    kept = [iv for iv in intervals if iv[2] in instructions and instructions[iv[2]]["opcode"] not in WRAPPER_OPCODES]
    shares, span, idle = attributed_times(kept)
    by_op: dict[str, dict] = {}
    calls = collections.Counter(name for _, _, name in kept)
    for name, seconds in shares.items():
        info = instructions[name]
        key = info["source"] or name
        row = by_op.setdefault(key, {"seconds": 0.0, "gflop": 0.0, "calls": 0, "part": part_of(key, info["flops"])})
        row["seconds"] += seconds
        row["gflop"] += info["flops"] * calls[name] / 1e9
        row["calls"] += calls[name]
    by_part: dict[str, dict] = collections.defaultdict(lambda: {"seconds": 0.0, "gflop": 0.0})
    for row in by_op.values():
        by_part[row["part"]]["seconds"] += row["seconds"]
        by_part[row["part"]]["gflop"] += row["gflop"]
    ranked = sorted(by_op.items(), key=lambda kv: -kv[1]["seconds"])
    return {
        "span_s": span,
        "idle_s": idle,
        "by_part": dict(sorted(by_part.items(), key=lambda kv: -kv[1]["seconds"])),
        "by_op": dict(ranked[:top]),
    }


def table(rows: dict[str, dict], first: str, with_calls: bool = False) -> str:
    header = f"| {first} | {'calls | ' if with_calls else ''}ms | GFLOP | GFLOP/s |"
    lines = [header, "|---|" + ("---|" if with_calls else "") + "---|---|---|"]
    for key, row in rows.items():
        rate = f"{row['gflop'] / row['seconds']:.0f}" if row["gflop"] and row["seconds"] else ""
        gflop = f"{row['gflop']:.1f}" if row["gflop"] else ""
        calls = f"{row['calls']} | " if with_calls else ""
        lines.append(f"| {key} | {calls}{row['seconds'] * 1e3:.1f} | {gflop} | {rate} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_and_input_arguments(parser)
    parser.set_defaults(runs=3)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--top", type=int, default=30, help="how many of the costliest ops to list")
    parser.add_argument("--quick", action="store_true", help="the tiny test architecture at 96x128: a check")
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp

    from zoedepth_jax import from_pretrained

    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        if args.quick:
            args.checkpoint, args.height, args.width, args.runs = scratch / "tiny", 96, 128, 1
            build_checkpoint(args.checkpoint, full=False)
        folder, images = checkpoint_and_images(args, scratch)
        model, variables = from_pretrained(folder, dtype=jnp.dtype(args.dtype))
        x = jnp.asarray(images.transpose(0, 2, 3, 1))
        compiled = jax.jit(model.apply).lower(variables, x).compile()
        instructions = read_hlo(compiled.as_text())
        inputs = (variables, x)
        walls = []
        for _ in range(args.runs + 1):  # a warm-up, then the timed runs
            start = time.perf_counter()
            jax.block_until_ready(compiled(*inputs))
            walls.append(time.perf_counter() - start)
        traces = [
            summarise(traced_intervals(compiled, inputs, scratch / f"trace_{i}"), instructions, args.top)
            for i in range(args.runs)
        ]
    result = {
        "dtype": args.dtype,
        "batch": args.batch,
        "input_hw": [args.height, args.width],
        "runs": args.runs,
        "wall_s": statistics.median(walls[1:]),
        "backend": jax.default_backend(),
        **sorted(traces, key=lambda trace: trace["span_s"])[len(traces) // 2],  # the trace of median span
    }
    wall = result["wall_s"]
    print(
        f"wall {wall * 1e3:.0f} ms per forward (untraced); traced: ops span {result['span_s'] * 1e3:.0f} ms, "
        f"idle between ops {result['idle_s'] * 1e3:.0f} ms "
        f"({args.dtype}, batch {args.batch}, {args.height}x{args.width})"
    )
    print(table(result["by_part"], "part"))
    print(table(result["by_op"], "op (source in the model)", with_calls=True))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
