"""One sweep job around the train task: resume, device slot, failure capture, DDP children.

A job's folder tells its state: `status.json` (`ok` or `failed` with the error's first line, the
device it ran on) is written when the job ends; a folder without it was killed or is running.
"""

from __future__ import annotations

import json
import logging
import math
import os
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

from lightning_resnet.sweeps.devices import apply_slot, claim_slot

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"


def read_json(path: Path) -> Any:
    """The file's JSON, or None when it is missing or half-written (a job killed mid-write)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_status(job_dir: Path) -> dict[str, Any] | None:
    return read_json(job_dir / STATUS_FILE)


def write_status(job_dir: Path, status: dict[str, Any]) -> None:
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / STATUS_FILE).write_text(json.dumps(status, indent=2))


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def pin_ddp_children(output_dir: Path) -> None:
    """Make Lightning's DDP children re-run this one job, in this folder.

    Lightning starts ranks > 0 by re-executing `sys.argv` plus `hydra.run.dir=<HydraConfig run.dir>`
    (Lightning PR #11617): inside a `-m` sweep that would re-run the whole sweep, into an unused
    `outputs/` folder. The children get this job's own overrides as a single run in its folder.
    """
    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    with read_write(hydra_cfg.run):
        hydra_cfg.run.dir = str(output_dir)
    if hydra_cfg.mode == RunMode.MULTIRUN:
        sys.argv[1:] = [o for o in hydra_cfg.overrides.task if not o.startswith("hydra.sweep.")]


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
        metrics = task(cfg)
        status.update(status="ok", best_score=metrics["best_score"])
        return metrics["best_score"]
    except Exception as err:
        log.error("job %s failed:\n%s", job_dir.name, traceback.format_exc())
        first_line = next((line for line in str(err).splitlines() if line.strip()), "")
        status.update(status="failed", error=f"{type(err).__name__}: {first_line}"[:300])
        return math.nan
    finally:
        status["ended"] = time.time()
        write_status(job_dir, status)
        leave_distributed(environ)


def leave_distributed(environ: dict[str, str]) -> None:
    """Undo what a DDP job leaves in this process, so the next job of the sweep starts clean:
    the process group, and the rank/port variables Lightning's launcher put in the environment."""
    if distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()
    os.environ.clear()
    os.environ.update(environ)
