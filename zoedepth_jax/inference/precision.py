"""Which compute dtype runs the model faster on this machine, float32 or bfloat16, found by timing matmuls of the
backbone's shapes (`--dtype auto`, `zoedepth-jax selfcheck`).

It depends on the machine, not only on whether the CPU has bf16 instructions: XLA:CPU runs a bf16 matmul as bf16
inputs with an fp32 result, and how fast that is against fp32 varies between CPUs that all report avx512_bf16
(`benchmarks/RESULTS.md` has measured cases both ways). The backbone's matmuls take most of a forward pass, so
their speed decides; the convolutions of the neck and heads run in fp32 either way.
"""

from __future__ import annotations

import dataclasses
import functools
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

# (rows, inner, columns) of the backbone's matmuls at the released 384x512 input: 24x32 patches plus the CLS
# token, BEiT-L's hidden size 1024 and MLP size 4096 (the MLP's two matmuls and a query/key/value projection).
BACKBONE_MATMULS = ((769, 1024, 4096), (769, 4096, 1024), (769, 1024, 1024))
REPEATS = 5  # timed runs of each matmul per dtype; the median counts
# bf16 rounds activations to 8 significant bits (depth within ~0.4% of fp32 at the median), so it has to be
# clearly faster to be worth it: by this factor on the matmuls, which lose part of their lead in the whole model.
BFLOAT16_MIN_SPEEDUP = 1.1


@dataclasses.dataclass(frozen=True)
class PrecisionTiming:
    """Matmul throughput of each compute dtype on one device, in GFLOP/s (medians over `REPEATS` runs)."""

    device: str
    float32_gflops: float
    bfloat16_gflops: float

    @property
    def bfloat16_speedup(self) -> float:
        return self.bfloat16_gflops / self.float32_gflops

    @property
    def fastest(self) -> str:
        """ "bfloat16" when it is at least `BFLOAT16_MIN_SPEEDUP` times faster, else "float32" (the exact one)."""
        return "bfloat16" if self.bfloat16_speedup >= BFLOAT16_MIN_SPEEDUP else "float32"

    def describe(self) -> str:
        return (
            f"{self.fastest} (backbone-shaped matmuls on {self.device}: float32 {self.float32_gflops:.0f} GFLOP/s, "
            f"bfloat16 {self.bfloat16_gflops:.0f} GFLOP/s, {self.bfloat16_speedup:.2f}x)"
        )


@jax.jit
def _float32_matmul(a, b):
    return jnp.dot(a, b, precision=jax.lax.Precision.DEFAULT)


@jax.jit
def _bfloat16_matmul(a, b):  # the model's bf16 form: bf16 inputs, fp32 result
    return jnp.dot(a, b, preferred_element_type=jnp.float32)


def device_name(device: jax.Device) -> str:
    """A CPU by its model name (from /proc/cpuinfo where there is one), an accelerator by its device kind."""
    if device.platform != "cpu":
        return device.device_kind
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "cpu"


def _seconds(matmul, a, b) -> float:
    start = time.perf_counter()
    matmul(a, b).block_until_ready()
    return time.perf_counter() - start


@functools.cache
def measure_precision(device: jax.Device | None = None) -> PrecisionTiming:
    """Times fp32 and bf16 on `BACKBONE_MATMULS` (on `device`, default the first local device), alternating the
    two so that a machine's load falls on both alike. About a second on a CPU; the result is cached per device."""
    device = device if device is not None else jax.local_devices()[0]
    rng = np.random.default_rng(0)
    flops, seconds = 0.0, {"float32": 0.0, "bfloat16": 0.0}
    for rows, inner, columns in BACKBONE_MATMULS:
        a = rng.standard_normal((rows, inner), dtype=np.float32)
        b = rng.standard_normal((inner, columns), dtype=np.float32)
        inputs = {
            "float32": (_float32_matmul, jax.device_put(a, device), jax.device_put(b, device)),
            "bfloat16": (
                _bfloat16_matmul,
                jax.device_put(a.astype(jnp.bfloat16), device),
                jax.device_put(b.astype(jnp.bfloat16), device),
            ),
        }
        for matmul, x, y in inputs.values():
            _seconds(matmul, x, y)  # compile and warm up
        runs = {name: [] for name in inputs}
        for _ in range(REPEATS):
            for name, (matmul, x, y) in inputs.items():
                runs[name].append(_seconds(matmul, x, y))
        flops += 2.0 * rows * inner * columns
        for name in inputs:
            seconds[name] += statistics.median(runs[name])
    return PrecisionTiming(
        device=device_name(device),
        float32_gflops=flops / seconds["float32"] / 1e9,
        bfloat16_gflops=flops / seconds["bfloat16"] / 1e9,
    )
