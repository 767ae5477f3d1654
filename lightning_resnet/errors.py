"""Errors that tell the user what to change, raised before any training starts, and how tasks print them."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

P = ParamSpec("P")
R = TypeVar("R")


class ConfigError(ValueError):
    """A config value is invalid; the message names the key and the valid choices."""


def exit_on_config_error(task: Callable[P, R]) -> Callable[P, R]:
    """For the function `@hydra.main` calls (it goes under the decorator, since Hydra catches exceptions
    itself): a `ConfigError` is the user's to fix, so its message alone goes to stderr, in full (a
    `BadImagesError` lists every file), and the process exits with status 2, instead of the message
    under Hydra's traceback. `HYDRA_FULL_ERROR=1` keeps the traceback. In a sweep (`-m`) the error is
    raised as before, so the job is recorded as failed and the sweep goes on (`sweeps.jobs.run_job`).
    """

    @functools.wraps(task)
    def reporting(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return task(*args, **kwargs)
        except ConfigError as err:
            multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
            if multirun or os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"error: {err}", file=sys.stderr, flush=True)
            sys.exit(2)

    return reporting


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights are neither cached nor downloadable; the message says where to put the file."""
