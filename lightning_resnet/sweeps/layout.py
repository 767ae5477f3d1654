"""Where runs and sweep jobs write: OmegaConf resolvers used by `conf/hydra/default.yaml`.

`fresh_dir` gives two sweeps started in the same second their own folders; `job_dirname` names a
sweep job's folder after its overrides, so `tensorboard --logdir multirun/<date>/<time>` lists runs
by what they changed and a re-run of the same sweep (`resume=true`) finds each job's folder again.
`run_dir` puts every rank of a torchrun or srun job into one folder, where `rank_zero_only` and
`rank_job_name` leave Hydra's `.hydra/` and `<task>.log` to rank 0.
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

from hydra.core.utils import JobRuntime
from omegaconf import OmegaConf

from lightning_resnet.errors import ConfigError
from lightning_resnet.external_launch import launched_job, launched_rank

MAX_NAME = 120
_claimed: dict[str, str] = {}  # base path -> folder this process claimed for it


def fresh_dir(base: str) -> str:
    """`base`, or `base_1`, `base_2`, ... if taken: created atomically, the same answer within a process.

    Hydra resolves `hydra.sweep.dir` more than once per sweep, also in launcher workers: the
    per-process memo and OmegaConf's resolver cache (copied into every job's config) keep it one folder.
    """
    if base in _claimed:
        return _claimed[base]
    Path(base).parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1000):
        candidate = base if attempt == 0 else f"{base}_{attempt}"
        try:
            Path(candidate).mkdir()
        except FileExistsError:
            continue
        _claimed[base] = candidate
        return candidate
    raise RuntimeError(f"cannot create a fresh folder for {base}")


def run_dir(parent: str, clock_name: str) -> str:
    """A single run's folder: `<parent>/<clock_name>` (`<date>/<time>`), made fresh (`fresh_dir`); for a rank
    of a job that torchrun or srun launched, `<parent>/<launcher>-<job id>` (`external_launch`), named alike
    by every rank, which resolves it on its own: no suffix and no mkdir race (Hydra makes it, `exist_ok`).
    No date either: ranks starting either side of midnight, or a SLURM job requeued days later, keep one folder.

    Hydra resolves this before the task runs, where `exit_on_config_error` cannot catch a `ConfigError`
    (a torchrun job without a rendezvous id), so it exits here as that would: the message, status 2.
    """
    job = launched_job()
    if job is None:
        return fresh_dir(f"{parent}/{clock_name}")
    try:
        return f"{parent}/{job.folder_name}"
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def rank_zero_only(value: str) -> str | None:
    """`value` in rank 0 (and outside a launched job), None in the other ranks of a torchrun or srun job."""
    return value if launched_rank() == 0 else None


def rank_job_name() -> str:
    """Hydra's job name (the task: `train`, `evaluate`), `<task>_rank<N>` in rank N > 0 of a torchrun or srun
    job: its log file is `<task>_rank<N>.log` beside rank 0's, where appending from two nodes would interleave."""
    name = JobRuntime().get("name")
    rank = launched_rank()
    return name if rank == 0 else f"{name}_rank{rank}"


def job_dirname(override_dirname: str, job_num: int) -> str:
    """A folder name from `hydra.job.override_dirname` (e.g. `model=resnet34,optimizer=sgd`).

    Path separators become `-`; names too long for a file system keep a readable prefix and a
    hash of the rest; a job without overrides is named by its number.
    """
    name = re.sub(r"[/\\:*?\"<>|\s]+", "-", override_dirname).strip("-.")
    if not name:
        return str(job_num)
    if len(name) > MAX_NAME:
        digest = hashlib.sha1(name.encode()).hexdigest()[:10]
        name = f"{name[: MAX_NAME - 11]}~{digest}"
    return name


def _parallel_slots() -> int:
    from lightning_resnet.sweeps.devices import parallel_slots  # torch: imported only when resolved

    return parallel_slots()


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("fresh_dir", fresh_dir, use_cache=True, replace=True)
    OmegaConf.register_new_resolver("run_dir", run_dir, use_cache=True, replace=True)
    OmegaConf.register_new_resolver("rank_zero_only", rank_zero_only, replace=True)
    OmegaConf.register_new_resolver("rank_job_name", rank_job_name, replace=True)
    OmegaConf.register_new_resolver("job_dirname", job_dirname, replace=True)
    OmegaConf.register_new_resolver("parallel_slots", _parallel_slots, use_cache=True, replace=True)
