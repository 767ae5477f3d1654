"""Reading lightning-resnet checkpoints safely (`weights_only=True`) and with errors that say why.

A file that is not ours (another model's, a bare state dict, a pickled object), one written by an
incompatible package version, or one whose weights do not fit its own hyper-parameters fails here
with the path and the reason, instead of deep inside `torch.load` or `load_state_dict`.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from lightning_resnet import __version__
from lightning_resnet.errors import ConfigError

CHECKPOINT_KEY = "lightning_resnet"  # extra checkpoint entry: package version, class names, preprocessing
REQUIRED = ("state_dict", "hyper_parameters", CHECKPOINT_KEY)


def _major(version: str) -> str:
    return str(version).split(".")[0]


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint dict, loaded with `weights_only=True` and checked to be a compatible one of ours."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"ckpt_path={path}: no such file")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
        raise ConfigError(
            f"ckpt_path={path}: cannot be read as a weights-only checkpoint (corrupt, or it stores pickled "
            f"objects, which are not loaded for safety): {str(err).splitlines()[0]}"
        ) from None
    missing = [key for key in REQUIRED if not isinstance(checkpoint, dict) or key not in checkpoint]
    if missing:
        raise ConfigError(
            f"ckpt_path={path} is not a lightning-resnet checkpoint (missing {', '.join(missing)}); "
            "pass a checkpoint written by `python -m lightning_resnet` (checkpoints/best-*.ckpt or last.ckpt)"
        )
    saved_by = str(checkpoint[CHECKPOINT_KEY].get("version", "unknown"))
    if _major(saved_by) != _major(__version__):
        raise ConfigError(
            f"ckpt_path={path} was written by lightning-resnet {saved_by}, incompatible with the installed "
            f"{__version__} (major versions differ); load it with a matching version"
        )
    return checkpoint
