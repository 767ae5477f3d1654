"""Where runs and sweep jobs write: OmegaConf resolvers used by `conf/hydra/default.yaml`.

`fresh_dir` gives two sweeps started in the same second their own folders; `job_dirname` names a
sweep job's folder after its overrides, so `tensorboard --logdir multirun/<date>/<time>` lists runs
by what they changed and a re-run of the same sweep (`resume=true`) finds each job's folder again.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from omegaconf import OmegaConf

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
    OmegaConf.register_new_resolver("job_dirname", job_dirname, replace=True)
    OmegaConf.register_new_resolver("parallel_slots", _parallel_slots, use_cache=True, replace=True)
