"""Small helpers every layer may use, kept free of heavy imports: CPUs, optional dependencies, the allocator."""

from __future__ import annotations

import ctypes
import importlib
import os
import platform
import sys
from types import ModuleType

# glibc's mallopt parameters (malloc.h) and the values `retain_freed_memory` sets.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
TRIM_THRESHOLD = 128 << 20  # free memory glibc keeps at the top of the heap before giving it back
MMAP_THRESHOLD = 32 << 20  # allocations below this come from the heap, reusable; glibc's maximum
ALLOCATOR_ENV = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")
_retained = False


def available_cpus() -> int:
    """CPUs this process may use (its affinity mask, which containers and `taskset` narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def require(module: str, extra: str) -> ModuleType:
    """Import an optional dependency, or fail naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{module} is needed here and is not installed: pip install 'lightning-resnet[{extra}]'"
        ) from err


def retain_freed_memory() -> bool:
    """Have glibc's allocator keep freed memory for the next training step instead of handing it back to the
    kernel and faulting it in again; True when set (now or before).

    A training step allocates and frees the same tensors every step (activations, gradients). glibc maps
    blocks above its mmap threshold separately and trims the heap top above its trim threshold; both start
    low (128 KiB) and rise only with what the process happens to free, so two processes doing the same
    steps can differ a hundredfold in page faults. From its second epoch on, the default digits run faulted
    ~200,000 pages per training epoch (seconds of system time on a 2-core VM), the plain script of
    `benchmarks/` next to none, only because its set-up had freed a 31 MB tensor (without that free it
    faulted as much); with fixed thresholds (blocks below 32 MiB from the reused heap, up to 128 MiB of it
    kept) the run faults ~2,000. Linux with glibc only; left alone when `MALLOC_*_`
    environment variables or `GLIBC_TUNABLES=glibc.malloc...` set them.
    """
    global _retained
    if _retained:
        return True
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    if any(name in os.environ for name in ALLOCATOR_ENV) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _retained = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return _retained
