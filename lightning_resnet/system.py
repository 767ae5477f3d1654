"""Facts about the machine the process runs on (kept free of heavy imports)."""

from __future__ import annotations

import os


def available_cpus() -> int:
    """CPUs this process may use (its affinity mask, which containers and `taskset` narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1
