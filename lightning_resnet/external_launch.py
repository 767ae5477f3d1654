"""Which externally launched job this process is one rank of: torchrun (TorchElastic) or srun (SLURM).

torchrun and srun start every rank of a run as its own `python -m lightning_resnet ...`, and each rank
composes its own config: only the environment they share tells them that they belong together. The run
folder is named after the job's id found there rather than after each rank's clock (`sweeps.layout.run_dir`),
so every rank resolves the same folder, on one machine or on several that share a file system, and ranks > 0
leave the run's files to rank 0. Lightning's own DDP spawning on one machine is not an external launch: it
hands its children rank 0's folder itself. Environment only, no torch: configs resolve it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from lightning_resnet.errors import ConfigError

TORCHRUN_DEFAULT_ID = "none"  # TORCHELASTIC_RUN_ID when torchrun had no --rdzv-id (and no --standalone)
SLURM_SHELLS = ("bash", "interactive")  # SLURM_JOB_NAME of an salloc shell, where srun started no ranks (as Lightning)


@dataclass(frozen=True)
class LaunchedJob:
    """One rank of a multi-process job started by an external launcher."""

    launcher: str  # "torchrun" or "slurm"
    job_id: str  # the same in every rank of the job, and only in this job
    rank: int  # this process's global rank
    world_size: int

    @property
    def folder_name(self) -> str:
        """The run folder's name, e.g. `torchrun-exp1` or `slurm-4242.0` (job 4242, step 0)."""
        if self.launcher == "torchrun" and self.job_id == TORCHRUN_DEFAULT_ID:
            raise ConfigError(
                f"torchrun started this process as rank {self.rank} of {self.world_size} without a rendezvous id "
                "(TORCHELASTIC_RUN_ID=none), so its ranks cannot agree on one run folder: give torchrun the same "
                "--rdzv-id=<id> on every node (or --standalone on one machine), or set hydra.run.dir=<a folder "
                "every node sees>"
            )
        return f"{self.launcher}-{re.sub(r'[^A-Za-z0-9._-]+', '-', self.job_id)}"


def launched_job(environ: Mapping[str, str] | None = None) -> LaunchedJob | None:
    """This process as a rank of a torchrun or srun job of more than one process, else None.

    torchrun comes first: under `srun torchrun ...` its variables describe this process, SLURM's the agent.
    A SLURM job counts when its step runs several tasks (SLURM_NTASKS > 1) outside an salloc shell; the
    step joins the job id (`4242.0`), so two srun steps of one batch script (train, then evaluate) get two
    folders instead of evaluate's `metrics.json` replacing train's.
    """
    env = os.environ if environ is None else environ
    if "TORCHELASTIC_RUN_ID" in env and int(env.get("WORLD_SIZE") or 1) > 1:
        return LaunchedJob("torchrun", env["TORCHELASTIC_RUN_ID"], int(env.get("RANK") or 0), int(env["WORLD_SIZE"]))
    tasks = int(env.get("SLURM_NTASKS") or 1)
    if "SLURM_JOB_ID" in env and tasks > 1 and env.get("SLURM_JOB_NAME") not in SLURM_SHELLS:
        step = env.get("SLURM_STEP_ID", env.get("SLURM_STEPID"))
        job_id = env["SLURM_JOB_ID"] if step is None else f"{env['SLURM_JOB_ID']}.{step}"
        return LaunchedJob("slurm", job_id, int(env.get("SLURM_PROCID") or 0), tasks)
    return None


def launched_rank(environ: Mapping[str, str] | None = None) -> int:
    """This process's rank in its externally launched job; 0 outside one."""
    job = launched_job(environ)
    return job.rank if job is not None else 0
