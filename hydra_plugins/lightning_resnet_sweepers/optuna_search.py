"""`OptunaSearch`: hydra-optuna-sweeper's `OptunaSweeper` (`hparams_search=optuna`) with two repairs.

1. A failed sweep job returns NaN (`lightning_resnet.sweeps.jobs.run_job`). hydra-optuna-sweeper 1.3 with
   Optuna 2.x tells Optuna the NaN, which raises, then tells FAIL *with* the NaN, which raises again and
   ends the whole search at its first failed trial (hydra issue #2237; the fix, hydra PR #3451, is not
   released). Here such a job (or one that returned None, no score) is handed back as a failed job with
   its `status.json` reason, which the sweeper records as a failed trial and goes on (with
   `max_failure_rate: 1.0`, set in the config).
2. When every trial failed, `study.best_trial` raises "No trials are completed yet." and Hydra skips the
   `on_multirun_end` callbacks, so no report. Here the report (`summary.csv/md/png`) is written and the
   program exits with status 1 and one line naming the count, the first reason and the report.

Hydra imports every module under `hydra_plugins` at start-up, so without the `sweeps` extra this module
must import quietly: the class then derives from `object` and is no plugin.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus

try:
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper as _Base
except ImportError:  # hydra-optuna-sweeper not installed
    _Base = object

log = logging.getLogger(__name__)


class TrialFailed(RuntimeError):
    """The job returned no score (NaN: it failed, for the reason in its `status.json`; or None)."""


class OptunaSearch(_Base):
    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.failures: list[str] = []  # the reason of each failed trial
        self.launched = 0
        self.sweeper.launcher = _FailedJobs(self.sweeper.launcher, self)

    def sweep(self, arguments: list[str]) -> Any:
        try:
            return super().sweep(arguments)
        except ValueError:  # Optuna's "No trials are completed yet." after the last trial
            if not self.launched or len(self.failures) < self.launched:
                raise
            sweep_dir = Path(self.sweeper.config.hydra.sweep.dir)
            where = _write_summary(sweep_dir)
            count = "the only trial" if self.launched == 1 else f"all {self.launched} trials"
            # SystemExit, like `cli()`'s own errors: the line alone, exit status 1 (an exception would come
            # with Hydra's stack-trace hint, and there is no trace worth reading here).
            raise SystemExit(
                f"hparams_search=optuna: {count} failed (first: {self.failures[0]}); the reasons are in {where}"
            ) from None


class _FailedJobs:
    """The sweeper's launcher, its jobs without a score handed back as failed ones (repair 1)."""

    def __init__(self, launcher: Any, search: OptunaSearch) -> None:
        self.launcher = launcher
        self.search = search

    def launch(self, job_overrides: Any, initial_job_idx: int) -> list[JobReturn]:
        returns = list(self.launcher.launch(job_overrides, initial_job_idx=initial_job_idx))
        for ret in returns:
            self.search.launched += 1
            if ret.status == JobStatus.FAILED:
                self.search.failures.append(f"{type(ret._return_value).__name__}: {ret._return_value}")
            elif _no_score(ret.return_value):
                reason = _status_error(ret) or f"the job returned {ret.return_value!r}, not a score"
                self.search.failures.append(reason)
                ret.return_value, ret.status = TrialFailed(reason), JobStatus.FAILED
        return returns


def _no_score(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _status_error(ret: JobReturn) -> str | None:
    """The error line the job wrote into its `status.json`, if any."""
    from lightning_resnet.sweeps.status import read_status

    job_dir = Path(ret.hydra_cfg.hydra.runtime.output_dir) if ret.hydra_cfg is not None else None
    status = read_status(job_dir) if job_dir is not None else None
    return (status or {}).get("error")


def _write_summary(sweep_dir: Path) -> Path:
    """The sweep report, which `SweepCallback.on_multirun_end` would have written; its path (or the sweep
    folder when no job left a folder to report on)."""
    from lightning_resnet.sweeps.summary import write_summary

    try:
        write_summary(sweep_dir)
    except FileNotFoundError as err:
        log.warning("no sweep summary: %s", err)
        return sweep_dir
    return sweep_dir / "summary.md"
