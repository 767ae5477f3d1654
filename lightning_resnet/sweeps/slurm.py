"""`launcher=slurm`: a sweep job that SLURM ends without a result is a failed job, not the end of the sweep.

hydra-submitit-launcher waits for the jobs in order and raises for the first one that has no result
(cancelled, killed for memory, its node lost, out of time with no requeue left, an error outside the
train task): the command then ends without the summary while the sweep's other jobs run on, unwatched.
`SlurmLauncher` waits for every job and records such a job in its folder's `status.json` as failed,
naming SLURM's state and the last line of its error log, as the train task records a job that raised;
the job returns NaN, as a failed job does (Optuna records a failed trial). A job SLURM has forgotten (an
array task cancelled while pending beside other pending tasks: it is dropped from the queue and never
reaches the accounting, so submitit would wait for it forever) is failed once squeue has not listed it for
`slurm_forgotten_after_s` (conf/launcher/slurm.yaml) and sacct has no line for it.

Hydra finds launchers only in the `hydra_plugins` package:
`hydra_plugins/lightning_resnet_launchers/slurm_launcher.py` names this class for `conf/launcher/slurm.yaml`.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher
from omegaconf import DictConfig, OmegaConf, open_dict

from lightning_resnet.sweeps.status import lost_job_return

log = logging.getLogger(__name__)

EXECUTOR_KEYS = {"submitit_folder", "max_num_timeout"}  # the executor's own; the rest are sbatch parameters
CHECK_S = 10.0  # how often a job waited for is looked up in the queue, at most


class ForgottenJobError(Exception):
    """SLURM keeps no record of the job: not in the queue, not in the accounting."""


class SlurmLauncher(SubmititSlurmLauncher):
    """hydra-submitit-launcher's SLURM launcher, with every job waited for and a job without a result recorded."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit  # the plugin imports it lazily too: Hydra's plugin scan stays quick

        assert self.config is not None and len(job_overrides) > 0
        executor = submitit.AutoExecutor(
            folder=self.params["submitit_folder"], cluster="slurm", slurm_max_num_timeout=self.params["max_num_timeout"]
        )
        common = set(OmegaConf.structured(BaseQueueConf).keys())  # sbatch parameters submitit names without `slurm_`
        executor.update_parameters(
            **{k if k in common else f"slurm_{k}": v for k, v in self.params.items() if k not in EXECUTOR_KEYS}
        )
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        log.info("Submitit 'slurm' sweep output dir : %s", sweep_dir)

        jobs_overrides = [list(o) for o in job_overrides]
        numbers = list(range(initial_job_idx, initial_job_idx + len(jobs_overrides)))
        for idx, overrides in enumerate(jobs_overrides, start=initial_job_idx):
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
        count = len(numbers)
        jobs = executor.map_array(
            self,  # each SLURM job calls the launcher with its arguments, as the plugin's own jobs do
            jobs_overrides,
            ["hydra.sweep.dir"] * count,
            numbers,
            [f"job_id_for_{idx}" for idx in numbers],
            [Singleton.get_state()] * count,
        )
        return [self._outcome(job, jobs_overrides[i], numbers[i]) for i, job in enumerate(jobs)]

    def _outcome(self, job: Any, overrides: list[str], idx: int) -> JobReturn:
        """The job's result; for a job without one, a NaN result, recorded failed in the job's folder."""
        from submitit.core.utils import UncompletedJobError

        forgotten_after_s = float(self.config.slurm_forgotten_after_s)
        try:
            wait_unless_forgotten(job, forgotten_after_s)
            return job.results()[0]
        except UncompletedJobError as err:  # FailedJobError too: an error raised outside the train task
            reason = last_line(str(err)) or "no result"
            error = f"SLURM job {job.job_id} ended {job.state} without a result: {reason}"[:300]
        except ForgottenJobError:
            error = (
                f"SLURM job {job.job_id} ended without a record: squeue has not listed it for "
                f"{forgotten_after_s:g} s and sacct does not (an array task cancelled while pending is not accounted)"
            )
        log.error("job #%d (%s): %s; its log: %s", idx, " ".join(overrides), error, job.paths.stderr)
        config = self._job_config(overrides, idx, job.job_id)
        return lost_job_return(config, Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir), error)

    def _job_config(self, overrides: list[str], idx: int, job_id: str) -> DictConfig:
        """The job's config as the job composes it (its folder name comes from its overrides and number)."""
        assert self.hydra_context is not None and self.config is not None
        config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(config.hydra.job):
            config.hydra.job.num = idx
            config.hydra.job.id = job_id
        return config


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def wait_unless_forgotten(job: Any, forgotten_after_s: float) -> None:
    """Wait for `job` as submitit does, or raise `ForgottenJobError` once SLURM has kept no record of it: no
    squeue line for `forgotten_after_s`, then no sacct line (submitit keeps the last state it read)."""
    every = min(CHECK_S, forgotten_after_s / 3)
    missing_since, next_check = None, time.monotonic()
    while not job.done():
        now = time.monotonic()
        if now >= next_check:
            next_check = now + every
            if listed(["squeue", "-h", "-j", job.job_id, "-o", "%i"]) is not False:
                missing_since = None
            elif missing_since is None:
                missing_since = now
            elif now - missing_since >= forgotten_after_s and listed(["sacct", "-X", "-n", "-j", job.job_id]) is False:
                raise ForgottenJobError(job.job_id)
        time.sleep(1.0)


def listed(command: list[str]) -> bool | None:
    """Whether a squeue/sacct query for one job prints a line; None when it cannot say (an error, a timeout)."""
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode == 0:
        return bool(result.stdout.strip())
    return False if "Invalid job id" in result.stderr else None
