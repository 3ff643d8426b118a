"""Keeping freed host memory in the process, so that each train step does not fault its buffers in afresh.

XLA:CPU allocates a compiled program's temporaries as one buffer per execution (gigabytes for a train step of the
released model) and frees it at the end. glibc's malloc serves a buffer that large with a fresh `mmap` and hands
it back with `munmap`, so every step the kernel maps and zeroes the whole buffer again, one 4 KiB page fault at a
time: millions of faults, seconds of system time per step.

`retain_freed_memory()` tells glibc's malloc to keep what is freed for reuse: every thread allocates from the main
heap (the other arenas would still `mmap` a buffer larger than their 64 MiB heaps), large blocks come from that
heap rather than from `mmap`, and the heap is never trimmed. After the first step the buffers are reused as they
are. The cost: the process keeps its peak memory until it ends, which a training process reaches every step anyway.
The same setting helps any program of large buffers (PyTorch's CPU training too); inference at one image a call
has buffers small enough that it makes no measurable difference there.

It must run before the first computation creates XLA's worker threads (a thread that has allocated already keeps
its arena). `zoedepth-jax finetune` calls it first thing; a script calls it at its top. Outside Linux with glibc
it does nothing and returns False. The environment-variable form, for a process started by something else:
`MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=18446744073709551615`.
"""

from __future__ import annotations

import ctypes
import platform

# mallopt's parameter numbers, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

_RETAINING_SETTINGS = (
    (_M_ARENA_MAX, 1),  # every thread allocates from the main heap
    (_M_MMAP_MAX, 0),  # large blocks come from the heap, not from mmap
    (_M_TRIM_THRESHOLD, -1),  # never give the heap's free top back (-1: no trimming at all)
)


def retain_freed_memory() -> bool:
    """Makes glibc's malloc keep freed memory for reuse (see the module docstring); True if it was applied."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    return all(libc.mallopt(parameter, value) == 1 for parameter, value in _RETAINING_SETTINGS)
