"""Keep freed memory in the process instead of handing it back to the OS (glibc malloc).

A forward pass at batch 64-256 allocates activations of 40-300 MB each. glibc serves any block over
32 MB with a fresh ``mmap`` and unmaps it on free, so the next batch faults every 4 KB page back in
and the kernel zeroes each one: a large share of the time caching backbone outputs (``--head-cache``)
took. With ``mmap`` off and the heap kept (up to ``TRIM_THRESHOLD`` free at its top), freed blocks
are reused as they are. Measured on the 2-core CPU (benchmarks/bench_allocator.py): forward passes at
batch 256, 1.7x the frames per second; at batch 64, 1.2x. Training steps (batch 32) gain nothing
measurable. The cost is resident memory that stays at its peak (~4 GB while caching at batch 256).

The CLI calls :func:`keep_freed_memory` once at start; worker processes it spawns (evaluation,
collection) inherit the setting through ``GLIBC_TUNABLES``. Set ``ARRCOC_STEER_DEFAULT_MALLOC=1`` to
keep glibc's defaults; a ``GLIBC_TUNABLES`` that already sets ``glibc.malloc`` options wins.
"""

from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_MAX = -4
TRIM_THRESHOLD = 1 << 30  # bytes free at the heap's top before glibc gives any back
TUNABLES = f"glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold={TRIM_THRESHOLD}"
OPT_OUT = "ARRCOC_STEER_DEFAULT_MALLOC"


def keep_freed_memory() -> bool:
    """Turn off ``mmap`` for large blocks and heap trimming in this process and in the processes it
    starts from now on. Returns whether it did (False: not glibc, opted out, or the user's own
    ``glibc.malloc`` tunables are set)."""
    if os.environ.get(OPT_OUT) == "1" or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    user = os.environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc." in user:
        return False
    os.environ["GLIBC_TUNABLES"] = f"{user}:{TUNABLES}" if user else TUNABLES  # read by children at start
    libc = ctypes.CDLL(None)  # the C library this interpreter is linked against
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
