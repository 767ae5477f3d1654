"""Optional dependencies, imported on use with a message naming the extra that provides them."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{module} is needed here and is not installed: pip install 'lightning-resnet[{extra}]'"
        ) from err
