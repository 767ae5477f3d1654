"""Reading lightning-resnet checkpoints safely (`weights_only=True`) and with errors that say why;
writing them atomically.

A file that is not ours (another model's, a bare state dict, a pickled object), one written by an
incompatible package version, or one whose weights do not fit its own hyper-parameters fails here
with the path and the reason, instead of deep inside `torch.load` or `load_state_dict`.
A checkpoint is written to a temp file beside its destination and renamed over it only once it is
complete on disk, so a kill or a full disk mid-write never leaves a truncated `.ckpt`.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pickle
import secrets
import shutil
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig

from lightning_resnet import __version__
from lightning_resnet.errors import ConfigError

CHECKPOINT_KEY = "lightning_resnet"  # extra checkpoint entry: package version, class names, preprocessing
REQUIRED = ("state_dict", "hyper_parameters", CHECKPOINT_KEY)
TEMP_SUFFIX = ".tmp"  # `.<name>.<random>.tmp` beside the checkpoint while it is being written


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, quota, permissions); the message names the file and
    the free space there. Nothing was left behind: an earlier file of that name is unchanged."""


def _major(version: str) -> str:
    return str(version).split(".")[0]


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False) -> dict[str, Any]:
    """The checkpoint dict, loaded with `weights_only=True` and checked to be a compatible one of ours.

    `mmap=True` maps the tensors instead of reading them: a cheap check of a file that is loaded again later.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"ckpt_path={path}: no such file")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as err:  # OSError: mmap of a cut file
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


def _size(num_bytes: float) -> str:
    """`1.5 MB`-style sizes for messages."""
    for unit in ("B", "KB", "MB"):
        if num_bytes < 1024:
            return f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    return f"{num_bytes:.1f} GB"


def write_failure_message(path: Path, error: BaseException) -> str:
    """Why `path` was not written, with the free space of its file system (the usual cause: a full disk).

    torch reports a failed write as `RuntimeError: ... unexpected pos`; the `OSError` behind it (e.g.
    `No space left on device`) is in the exception's context, and is the reason given.
    """
    cause: BaseException | None = error
    while cause is not None and not (isinstance(cause, OSError) and cause.strerror):
        cause = cause.__cause__ or cause.__context__
    reason = cause.strerror if isinstance(cause, OSError) else (str(error).splitlines() or [type(error).__name__])[0]
    try:
        usage = shutil.disk_usage(path.parent)
        space = f"{_size(usage.free)} free of {_size(usage.total)} in {path.parent}"
    except OSError:
        space = f"free space in {path.parent} unknown"
    return (
        f"cannot write checkpoint {path}: {reason} ({space}); nothing was written and an earlier {path.name} "
        "is unchanged: free some space or point paths.output_dir at a larger disk"
    )


def save_atomically(checkpoint: dict[str, Any], path: str | Path) -> None:
    """`torch.save` into a temp file in `path`'s own folder, flushed and fsynced, then `os.replace`d onto `path`.

    The rename is atomic within a file system, so readers see the old file or the complete new one, never
    a partial one (Lightning's own save streams a buffer over the destination). A failure removes the temp
    file and raises `CheckpointWriteError`. Temp files a killed process left for this name are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*{TEMP_SUFFIX}"):
        stale.unlink(missing_ok=True)
    temp = path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}"
    # os.open rather than mkstemp: mode 0o666 less the umask, as any file the run writes (mkstemp: 0o600)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as file:
            torch.save(checkpoint, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException as err:
        temp.unlink(missing_ok=True)
        if isinstance(err, (OSError, RuntimeError)):  # torch reports a failed write as a RuntimeError
            raise CheckpointWriteError(write_failure_message(path, err)) from err
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable (where the file system allows it)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO, with local files written by `save_atomically` (`trainer.plugins`).

    Remote URLs (`s3://...`) are written as Lightning writes them.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        text = str(path)
        if storage_options is not None or ("://" in text and not text.startswith("file://")):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        save_atomically(checkpoint, text.removeprefix("file://"))


def last_checkpoint_path(cfg: DictConfig) -> Path:
    """Where `LastCheckpoint` writes (`callbacks.last_checkpoint`), else `<run folder>/checkpoints/last.ckpt`."""
    node = (cfg.get("callbacks") or {}).get("last_checkpoint") or {}
    folder = node.get("dirpath") or Path(cfg.paths.output_dir) / "checkpoints"
    return Path(folder) / node.get("filename", "last.ckpt")


def resume_checkpoint(cfg: DictConfig) -> str | None:
    """`ckpt_path` as the file to resume from, checked before anything is built or written.

    `last` is this run folder's `last.ckpt`, and must exist (Lightning would warn and train from scratch).
    The file must be a readable checkpoint of ours (a truncated one fails here with the path, not after
    set-up in `torch.serialization`) with the optimizer state a resume restores (`best-*.ckpt` files are
    weights only). `hpc` and `registry` are Lightning's own look-ups and are passed on.
    """
    value = cfg.get("ckpt_path")
    if value is None or value in ("hpc", "registry"):
        return value
    path = last_checkpoint_path(cfg) if value == "last" else Path(value)
    if value == "last" and not path.is_file():
        raise ConfigError(
            f"ckpt_path=last: no {path.name} in {path.parent}, nothing to resume; point hydra.run.dir at the "
            "folder of the run to continue (e.g. hydra.run.dir=outputs/<date>/<time>), or pass a checkpoint file"
        )
    checkpoint = read_checkpoint(path, mmap=True)
    if "optimizer_states" not in checkpoint:
        raise ConfigError(
            f"ckpt_path={path} holds weights only (as best-*.ckpt files do), not the optimizer and schedule state "
            "a resume needs: resume from the run's last.ckpt (ckpt_path=last)"
        )
    return str(path)
