"""`RayJobsLauncher` (`launcher=ray`): each sweep job as one Ray task, on this machine or a running cluster.

Why not hydra-ray-launcher: it collects the jobs with `ray.get` one after another, so one job whose
worker died (killed, out of memory, node lost) raises in the driver, the sweep ends there and no report
is written; it also pulls `ray[default]`, boto3 and cloudpickle<3. Here the driver waits on all jobs
with `ray.wait`, and a job lost that way is recorded `failed` in its `status.json` like a job that
raised, while the others go on (`resume=true` continues it from its `last.ckpt`).

Each task gets a fresh worker process (`max_calls: 1`, so GPU memory is released between jobs) with
`num_cpus` / `num_gpus` of its own (Ray sets `CUDA_VISIBLE_DEVICES`), and is not retried by Ray
(`max_retries: 0`): a retry would start over in a folder that holds the lost run's checkpoints.
"""

# No `from __future__ import annotations`: Hydra runs this module outside sys.modules when it scans for plugins,
# where dataclasses cannot resolve string annotations.
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from hydra_plugins.lightning_resnet_launchers.ray_cluster import connect, job_resources
from hydra_plugins.lightning_resnet_launchers.ray_job import describe, run_sweep_job
from lightning_resnet.sweeps.status import lost_job_return

log = logging.getLogger(__name__)


@dataclass
class RayConf:
    # ray.init arguments: `address: null` starts a Ray for the sweep on this machine; `auto` joins the
    # cluster of `ray start` on this machine; `<head>:6379` joins that head.
    init: dict[str, Any] = field(default_factory=lambda: {"address": None})
    # ray.remote options of every job; num_gpus `auto`: 1 where the cluster has GPUs, else 0.
    remote: dict[str, Any] = field(
        default_factory=lambda: {"num_cpus": 1, "num_gpus": "auto", "max_calls": 1, "max_retries": 0}
    )


@dataclass
class RayJobsLauncherConf:
    _target_: str = "hydra_plugins.lightning_resnet_launchers.ray_launcher.RayJobsLauncher"
    ray: RayConf = field(default_factory=RayConf)
    check_resources: bool = True  # stop at once when no node could hold one job (else Ray waits forever)
    forward_env: list[str] = field(default_factory=lambda: ["LIGHTNING_RESNET_DATA", "TORCH_HOME"])


ConfigStore.instance().store(
    group="hydra/launcher", name="ray_jobs", node=RayJobsLauncherConf, provider="lightning-resnet"
)


@dataclass
class _Submitted:
    ref: Any  # the task's ObjectRef
    config: DictConfig
    job_dir: Path
    at: float


class RayJobsLauncher(Launcher):
    def __init__(self, ray: DictConfig, check_resources: bool = True, forward_env: Sequence[str] = ()) -> None:
        self.ray_cfg = ray
        self.check_resources = check_resources
        self.forward_env = list(forward_env)
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).absolute()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        connect(OmegaConf.to_container(self.ray_cfg.init, resolve=True))
        options = job_resources(OmegaConf.to_container(self.ray_cfg.remote, resolve=True), self.check_resources)
        log.info("Ray: %d jobs, each with %s, into %s", len(job_overrides), options, sweep_dir)
        import ray

        task = ray.remote(**options)(run_sweep_job)
        submitted = [
            self._submit(task, list(overrides), idx, sweep_dir)
            for idx, overrides in enumerate(job_overrides, start=initial_job_idx)
        ]
        return _collect(submitted)

    def _submit(self, task: Any, overrides: list[str], idx: int, sweep_dir: Path) -> _Submitted:
        """One job: its config composed here, as the basic launcher would, then sent with the task."""
        assert self.config is not None and self.hydra_context is not None
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with read_write(sweep_config), open_dict(sweep_config):
            sweep_config.hydra.job.id = f"ray_{idx}"
            sweep_config.hydra.job.num = idx
            sweep_config.hydra.sweep.dir = str(sweep_dir)  # absolute: a worker may start elsewhere
        job_dir = sweep_dir / str(OmegaConf.select(sweep_config, "hydra.sweep.subdir"))
        log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
        env = {name: os.environ[name] for name in self.forward_env if name in os.environ}
        ref = task.options(name=f"job {idx}: {job_dir.name}").remote(
            self.hydra_context, sweep_config, self.task_function, Singleton.get_state(), os.getcwd(), env
        )
        return _Submitted(ref, sweep_config, job_dir, time.time())


def _collect(submitted: list[_Submitted]) -> list[JobReturn]:
    """Every job's result, in submission order, taken as each finishes; a lost job becomes a failed one.
    Interrupted (Ctrl-C), the driver cancels the jobs still running before it stops."""
    import ray
    from ray.exceptions import RayError

    results: dict[int, JobReturn] = {}
    pending = {job.ref: index for index, job in enumerate(submitted)}
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                index = pending.pop(ref)
                job = submitted[index]
                try:
                    results[index] = ray.get(ref)
                except RayError as err:
                    log.error(
                        "job %s lost (%s); its status.json says failed, resume=true continues it from its last.ckpt",
                        job.job_dir.name,
                        describe(err),
                    )
                    results[index] = lost_job_return(job.config, job.job_dir, describe(err), since=job.at)
                log.info("job %s done; %d of %d still running", job.job_dir.name, len(pending), len(submitted))
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    return [results[index] for index in range(len(submitted))]
