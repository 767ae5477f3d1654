"""One device per parallel sweep job (`launcher=gpus`), claimed by the worker process for its life.

Why not `CUDA_VISIBLE_DEVICES` per job: hydra-joblib-launcher's loky workers are reused, so a
variable set for a later job has no effect once CUDA is initialised in that worker (Hydra issues
#1331, #2187), and `hydra.job.num % n` collides when jobs finish out of order. Instead each worker
takes an exclusive `flock` on one slot file the first time it runs a job and keeps it until it
exits (the kernel releases it even on SIGKILL); every job of that worker trains on that slot's
device, named explicitly (`trainer.devices=[k]`), which holds whenever CUDA was initialised.
On a CPU-only machine a slot is a share of the cores: `torch.set_num_threads(cpus // slots)`.
"""

from __future__ import annotations

import fcntl
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from lightning_resnet.utils import available_cpus


@dataclass(frozen=True)
class DeviceSlot:
    index: int  # slot number, 0 <= index < of
    of: int
    accelerator: str  # gpu | cpu
    device: int | None  # CUDA device index (gpu) or None
    threads: int  # torch threads for this job's process

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "pid": os.getpid()}


_held: dict[str, tuple[int, DeviceSlot]] = {}  # lock dir -> (open lock file descriptor, slot), per process


def visible_gpus() -> list[int]:
    """CUDA device indices this process may use."""
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


def parallel_slots(gpus: list[int] | None = None, cpus: int | None = None) -> int:
    """How many jobs run at once: one per visible GPU; on CPU, up to 4-core shares (at least 2)."""
    gpus = visible_gpus() if gpus is None else gpus
    if gpus:
        return len(gpus)
    return max(2, (cpus or available_cpus()) // 4)


def claim_slot(
    lock_dir: str | Path,
    slots: int,
    gpus: list[int] | None = None,
    cpus: int | None = None,
    timeout_s: float = 600.0,
) -> DeviceSlot:
    """This process's slot under `lock_dir`: the one it already holds, or the first free one.

    Waits (polling) while all are held by other live workers, e.g. a worker of an earlier
    batch still exiting; gives up after `timeout_s` with a message naming the cause.
    """
    key = str(Path(lock_dir).resolve())
    if key in _held:
        return _held[key][1]
    gpus = visible_gpus() if gpus is None else gpus
    if gpus and slots > len(gpus):
        raise RuntimeError(
            f"launcher=gpus: {slots} parallel jobs but {len(gpus)} visible GPUs; "
            f"set hydra.launcher.n_jobs <= {len(gpus)}"
        )
    Path(lock_dir).mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    while True:
        for index in range(slots):
            fd = os.open(Path(lock_dir) / f"slot-{index}.lock", os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            threads = 1 if gpus else max(1, (cpus or available_cpus()) // slots)
            slot = DeviceSlot(index, slots, "gpu" if gpus else "cpu", gpus[index] if gpus else None, threads)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            _held[key] = (fd, slot)
            return slot
        if time.monotonic() > deadline:
            raise TimeoutError(f"no free device slot under {lock_dir} after {timeout_s:.0f} s ({slots} slots)")
        time.sleep(0.2)


def apply_slot(slot: DeviceSlot) -> dict[str, Any]:
    """Pin this process to the slot; returns the trainer overrides that make the job use it."""
    torch.set_num_threads(slot.threads)
    if slot.accelerator == "gpu":
        return {"accelerator": "gpu", "devices": [slot.device]}
    return {"accelerator": "cpu", "devices": 1}
