"""Small helpers every layer may use, kept free of heavy imports: CPUs, optional dependencies."""

from __future__ import annotations

import importlib
import os
from types import ModuleType


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
