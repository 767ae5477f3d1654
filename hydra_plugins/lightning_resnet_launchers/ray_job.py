"""One sweep job as a Ray task, and how the driver names a Ray error.

The task runs Hydra's `run_job` in the Ray worker as the basic launcher would in its own process: the
train task's `run_job` (lightning_resnet.sweeps.jobs) writes the job's `status.json` there. A task that
never returns a result (its worker killed, out of memory, its node lost) cannot write it, so the driver
does (`lightning_resnet.sweeps.status.lost_job_return`), with `describe`'s line.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, run_job, setup_globals
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

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


def describe(error: BaseException) -> str:
    """`<Type>: <first line>`, with the job's own exception for an error raised inside the task."""
    cause = getattr(error, "cause", None)
    shown = cause if isinstance(cause, BaseException) else error
    first_line = next((line.strip() for line in str(shown).splitlines() if line.strip()), "")
    return f"{type(shown).__name__}: {first_line}"
