"""One sweep job as a Ray task, and what the driver records for a job whose task did not come back.

The task runs Hydra's `run_job` in the Ray worker as the basic launcher would in its own process: the
train task's `run_job` (lightning_resnet.sweeps.jobs) writes the job's `status.json` there. A task that
never returns a result (its worker killed, out of memory, its node lost) cannot write it, so the driver
does, from the Ray error.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, run_job, setup_globals
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

log = logging.getLogger(__name__)


def run_sweep_job(
    hydra_context: HydraContext,
    sweep_config: DictConfig,
    task_function: TaskFunction,
    singleton_state: dict[Any, Any],
    cwd: str,
    env: Mapping[str, str],
) -> JobReturn:
    """In the Ray worker: the driver's working directory (so relative paths such as `data/` mean the
    same; on another machine it needs the same shared path) and forwarded variables, then the job."""
    os.environ.update(env)
    if Path(cwd).is_dir():
        os.chdir(cwd)
    else:
        log.warning("the driver's working directory %s is not on this node; relative paths may differ", cwd)
    setup_globals()
    Singleton.set_state(singleton_state)
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = _task_id() or sweep_config.hydra.job.id
    HydraConfig.instance().set_config(sweep_config)
    return run_job(
        hydra_context=hydra_context,
        task_function=task_function,
        config=sweep_config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )


def _task_id() -> str | None:
    import ray

    return ray.get_runtime_context().get_task_id()


def lost_job_return(sweep_config: DictConfig, job_dir: Path, error: BaseException, submitted: float) -> JobReturn:
    """The result of a job whose task raised in Ray or whose worker died: `status.json` says `failed`
    (unless the job wrote its own final status after `submitted`), and the return value is NaN, as
    `run_job` returns for a failed job, so the sweep goes on and its report is written."""
    from lightning_resnet.sweeps.jobs import read_status, write_status  # torch: not at Hydra's plugin scan

    reason = describe(error)
    own = read_status(job_dir)
    if not (own and own.get("status") in ("ok", "failed") and (own.get("ended") or 0) >= submitted):
        write_status(job_dir, {"status": "failed", "error": reason[:300], "submitted": submitted, "ended": time.time()})
    with read_write(sweep_config), open_dict(sweep_config):
        sweep_config.hydra.runtime.output_dir = str(job_dir)
    task_cfg = copy.deepcopy(sweep_config)
    with read_write(task_cfg), open_dict(task_cfg):
        del task_cfg["hydra"]
    _save_job_config(sweep_config, task_cfg, job_dir)
    ret = JobReturn(overrides=list(sweep_config.hydra.overrides.task), cfg=task_cfg, hydra_cfg=sweep_config)
    ret.return_value, ret.status = math.nan, JobStatus.COMPLETED
    ret.task_name = sweep_config.hydra.job.name
    ret.working_dir = str(job_dir)
    return ret


def _save_job_config(sweep_config: DictConfig, task_cfg: DictConfig, job_dir: Path) -> None:
    """`.hydra/config.yaml` and `overrides.yaml` for a job lost before Hydra wrote them (its worker died
    while starting), so the sweep report lists it as failed too."""
    subdir = sweep_config.hydra.output_subdir
    if subdir is None or (job_dir / subdir / "overrides.yaml").is_file():
        return
    (job_dir / subdir).mkdir(parents=True, exist_ok=True)
    OmegaConf.save(task_cfg, job_dir / subdir / "config.yaml")
    OmegaConf.save(sweep_config.hydra.overrides.task, job_dir / subdir / "overrides.yaml")


def describe(error: BaseException) -> str:
    """`<Type>: <first line>`, with the job's own exception for an error raised inside the task."""
    cause = getattr(error, "cause", None)
    shown = cause if isinstance(cause, BaseException) else error
    first_line = next((line.strip() for line in str(shown).splitlines() if line.strip()), "")
    return f"{type(shown).__name__}: {first_line}"
