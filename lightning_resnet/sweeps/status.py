"""A sweep job's `status.json`: `ok`, or `failed` with the error's first line, written when the job ends
(a folder without it was killed or is running), and read by the summary, resume and Optuna.

`lost_job_return` is what a launcher records for a job that ended without a result (its Ray worker or
SLURM job killed, cancelled, out of memory, its node lost), which cannot write its own: it counts as
failed like one that raised (a NaN result, so the sweep goes on and Optuna records a failed trial), and
`resume=true` continues it from `last.ckpt`. No torch here: launchers import it at Hydra's plugin scan.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

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


def lost_job_return(config: DictConfig, job_dir: Path, error: str, since: float | None = None) -> JobReturn:
    """Record the job at `job_dir` failed with `error`, unless it recorded a final status itself (any `ok`;
    a `failed` written after `since`, the submission time); return the NaN result its launcher reports.

    A job lost before Hydra wrote its `.hydra/` gets the config and overrides the summary lists jobs by.
    """
    previous = read_status(job_dir) or {}
    written_by_job = previous.get("status") == "ok" or (
        since is not None and previous.get("status") == "failed" and (previous.get("ended") or 0) >= since
    )
    if not written_by_job:
        write_status(job_dir, {**previous, "status": "failed", "error": error[:300], "ended": time.time()})
    with read_write(config), open_dict(config):
        config.hydra.runtime.output_dir = str(job_dir)
    task_config = OmegaConf.masked_copy(config, [key for key in config if key != "hydra"])
    saved = config.hydra.output_subdir
    if saved is not None and not (job_dir / saved / "overrides.yaml").is_file():
        (job_dir / saved).mkdir(parents=True, exist_ok=True)
        OmegaConf.save(task_config, job_dir / saved / "config.yaml")
        OmegaConf.save(config.hydra.overrides.task, job_dir / saved / "overrides.yaml")
    result = JobReturn(
        overrides=list(config.hydra.overrides.task),
        cfg=task_config,
        hydra_cfg=config,
        working_dir=str(job_dir),
        task_name=str(config.hydra.job.name),
        status=JobStatus.COMPLETED,
    )
    result.return_value = math.nan
    return result
