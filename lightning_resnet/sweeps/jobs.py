"""One sweep job around the train task: resume, device slot, failure capture, DDP children.

A job's folder tells its state: `status.json` (`ok` or `failed` with the error's first line, the
device it ran on) is written when the job ends; a folder without it was killed or is running.

A job whose DDP ranks Lightning would start itself runs as a child process (`run_in_child`): Lightning
SIGKILLs its whole process group when one rank fails, and in a sweep rank 0 would be the sweep's driver.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import re
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from torch import distributed

from lightning_resnet.external_launch import launched_job, launched_rank
from lightning_resnet.sweeps.devices import apply_slot, claim_slot
from lightning_resnet.sweeps.status import read_json, read_status, write_status

log = logging.getLogger(__name__)


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def pin_ddp_children(output_dir: Path) -> None:
    """Make Lightning's DDP children write into this run's folder.

    Lightning starts ranks > 0 by re-executing `sys.argv` plus `hydra.run.dir=<HydraConfig run.dir>`
    (Lightning PR #11617); a run's folder may differ from that (e.g. `paths.output_dir` set). In a sweep
    such a job runs as a single run in a child process (`run_in_child`), so this holds there too.
    """
    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    with read_write(hydra_cfg.run):
        hydra_cfg.run.dir = str(output_dir)


def run_job(cfg: DictConfig, task: Callable[[DictConfig], dict[str, Any]]) -> float | None:
    """`task(cfg)`, the monitored score returned; in a sweep also the bookkeeping of the module docstring.

    In a sweep a failure is logged and recorded, and the job returns NaN (Optuna records a failed
    trial) so the other jobs go on; a single run raises as usual.
    """
    if not in_multirun():
        return task(cfg)["best_score"]
    job_dir = Path(cfg.paths.output_dir)
    previous = read_status(job_dir)
    if cfg.get("resume") and previous and previous.get("status") == "ok":
        log.info("resume=true: %s finished before (best %s); skipped", job_dir.name, previous.get("best_score"))
        return previous.get("best_score")
    last = job_dir / "checkpoints" / "last.ckpt"
    if cfg.get("resume") and cfg.get("ckpt_path") is None:
        with open_dict(cfg):
            if last.is_file():
                log.info("resume=true: continuing %s from %s", job_dir.name, last)
                cfg.ckpt_path = str(last)
            else:  # unfinished before its first last.ckpt: whatever it left is replaced, not refused
                cfg.overwrite = True
    status: dict[str, Any] = {"status": "interrupted", "started": time.time()}
    environ = dict(os.environ)
    try:
        if cfg.get("claim_device"):
            slot = claim_slot(job_dir.parent / ".device_slots", int(HydraConfig.get().launcher.n_jobs))
            status["device"] = slot.as_dict()
            with open_dict(cfg):
                cfg.trainer = OmegaConf.merge(cfg.trainer, apply_slot(slot))
            log.info("device slot %d of %d: %s", slot.index, slot.of, status["device"])
        best_score = run_in_child(cfg, job_dir) if starts_own_ranks(cfg.trainer) else task(cfg)["best_score"]
        status.update(status="ok", best_score=best_score)
        return best_score
    except Exception as err:
        log.error("job %s failed:\n%s", job_dir.name, traceback.format_exc())
        first_line = next((line for line in str(err).splitlines() if line.strip()), "")
        error = first_line if isinstance(err, JobProcessError) else f"{type(err).__name__}: {first_line}"
        status.update(status="failed", error=error[:300])
        return math.nan
    finally:
        status["ended"] = time.time()
        if launched_rank() == 0:  # the other ranks of a job whose ranks srun or torchrun started share its folder
            write_status(job_dir, status)
        leave_distributed(environ)


def leave_distributed(environ: dict[str, str]) -> None:
    """Undo what a DDP job leaves in this process, so the next job of the sweep starts clean:
    the process group, and the rank/port variables Lightning's launcher put in the environment."""
    if distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()
    os.environ.clear()
    os.environ.update(environ)


OTHER_LAUNCHERS_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "LSB_JOBID")  # MPI, LSF: they start the ranks too


def starts_own_ranks(trainer: DictConfig) -> bool:
    """Whether Lightning would start this job's DDP ranks itself: several devices or nodes, and no
    launcher (srun of several tasks, torchrun, MPI, LSF) that started them already."""
    if launched_job() is not None or any(name in os.environ for name in OTHER_LAUNCHERS_VARIABLES):
        return False
    strategy = trainer.get("strategy")
    name = str(strategy.get("_target_", "") if isinstance(strategy, DictConfig) else strategy).lower()
    if name in ("single_device", "dp") or "singledevice" in name:
        return False
    devices = trainer.get("devices")
    if isinstance(devices, str) and "," in devices:
        devices = [d for d in devices.split(",") if d.strip()]
    if OmegaConf.is_list(devices) or isinstance(devices, list):
        count = len(devices)
    elif str(devices) in ("-1", "auto"):
        count = 1 if trainer.get("accelerator") == "cpu" else _cuda_devices()
    else:
        count = int(devices)
    return count * int(trainer.get("num_nodes") or 1) > 1


def _cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 1


def run_in_child(cfg: DictConfig, job_dir: Path) -> float | None:
    """Run this job as a single run (`python -m lightning_resnet <its overrides> hydra.run.dir=<job>`) in
    a child process and return its best score; raises `JobProcessError` with the child's error when it fails.

    The child's output passes through; the last lines of its stderr are kept to name the error.
    """
    command = child_command(cfg, job_dir)
    log.info("DDP job: its ranks run in a child process: %s", " ".join(command))
    tail: collections.deque[str] = collections.deque(maxlen=200)
    child = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, errors="replace")
    try:
        for line in child.stderr:
            sys.stderr.write(line)
            tail.append(line.rstrip("\n"))
        returncode = child.wait()
    except BaseException:  # Ctrl-C or SIGTERM of the driver: the job's processes do not outlive it
        child.terminate()
        child.wait(timeout=60)
        raise
    if returncode != 0:
        raise JobProcessError(returncode, tail)
    metrics = read_json(job_dir / "metrics.json") or {}
    return metrics.get("best_score")


def child_command(cfg: DictConfig, job_dir: Path) -> list[str]:
    """The command that runs this job alone, as the sweep composed it: the same config and overrides,
    plus what `run_job` decided for it (resume checkpoint, overwrite)."""
    hydra_cfg = HydraConfig.get()
    decided = {"ckpt_path": cfg.get("ckpt_path"), "overwrite": cfg.get("overwrite")}
    decided = {key: value for key, value in decided.items() if value not in (None, False)}
    overrides = [o for o in hydra_cfg.overrides.task if o.split("=", 1)[0].lstrip("+~") not in decided]
    config_dirs = [
        arg
        for source in hydra_cfg.runtime.config_sources
        if source.provider == "command-line"
        for arg in ("--config-dir", source.path.removeprefix("file://"))
    ]
    return [
        sys.executable,
        "-m",
        "lightning_resnet",
        *config_dirs,
        "--config-name",
        hydra_cfg.job.config_name,
        *overrides,
        *(f"{key}={_quoted(value)}" for key, value in decided.items()),
        f"hydra.run.dir={_quoted(job_dir)}",
        f"hydra.job.name={_quoted(hydra_cfg.job.name)}",
    ]


def _quoted(value: object) -> str:
    """`value` as an override value: bools as Hydra reads them, anything else quoted (paths hold `=`, `,`)."""
    if isinstance(value, bool):
        return str(value).lower()
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


class JobProcessError(RuntimeError):
    """A job's child process ended with an error; the message is the child's exception line."""

    def __init__(self, returncode: int, stderr_tail: collections.abc.Iterable[str]):
        lines = list(stderr_tail)
        error = next((line for line in reversed(lines) if _EXCEPTION_LINE.match(line)), None)
        how = f"killed by signal {-returncode}" if returncode < 0 else f"exit status {returncode}"
        super().__init__(f"{error} (job process: {how})" if error else f"job process ended with {how}")
        self.returncode = returncode


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b.*")
