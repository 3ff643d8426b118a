"""`training.host_memory.retain_freed_memory`: a large block freed by a worker thread is reused by the next
allocation, so its pages are not faulted in again; without the setting they are, every time."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from zoedepth_jax.training import host_memory

BLOCK_MIB = 128

# A fresh process: the setting must come before any other thread allocates, so the module is loaded from its file
# (importing the package would import numpy and jax, and start threads, first). A new thread, as XLA's workers
# are, allocates a block, writes every page, frees it, three times; the minor page faults of each round are
# printed.
FAULTS_SCRIPT = """
import ctypes, importlib.util, json, resource, sys, threading
spec = importlib.util.spec_from_file_location("host_memory", sys.argv[1])
host_memory = importlib.util.module_from_spec(spec)
spec.loader.exec_module(host_memory)
if sys.argv[2] == "retain":
    assert host_memory.retain_freed_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = int(sys.argv[3]) * 2**20
faults = []
def rounds():
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        libc.free(block)
        faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
worker = threading.Thread(target=rounds)
worker.start()
worker.join()
print(json.dumps(faults))
"""


def _faults_per_round(mode: str) -> list[int]:
    command = [sys.executable, "-c", FAULTS_SCRIPT, host_memory.__file__, mode, str(BLOCK_MIB)]
    completed = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(completed.stdout.splitlines()[-1])


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="the setting is glibc's malloc's"
)
def test_a_freed_block_is_reused_without_page_faults():
    pages = BLOCK_MIB * 2**20 // 4096
    plain = _faults_per_round("plain")
    assert min(plain) > pages * 0.9, plain  # mapped afresh and handed back every round
    first, *later = _faults_per_round("retain")
    assert first > pages * 0.9 and max(later) < pages * 0.01, [first, *later]


def test_elsewhere_it_does_nothing(monkeypatch):
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    assert host_memory.retain_freed_memory() is False
