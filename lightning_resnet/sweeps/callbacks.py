"""`SweepCallback`: Hydra callback that names sweep job folders and writes the report at the end."""

from __future__ import annotations

import logging
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, read_write

log = logging.getLogger(__name__)


class SweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Name job folders by what varies: command-line overrides with a single value are left out.

        `model=resnet18,resnet34 trainer.max_epochs=5` gives folders `model=resnet18`, `model=resnet34`.
        Every job's config is composed from the master's `hydra.overrides.hydra`, so the exclusion is
        added there (also reaching launcher workers, which receive the master config).
        """
        parsed = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
        constants = [o.get_key_element().lstrip("+~") for o in parsed if not o.is_sweep_override()]
        if not constants:
            return
        excluded = [*config.hydra.job.config.override_dirname.exclude_keys, *constants]
        with read_write(config.hydra):
            config.hydra.job.config.override_dirname.exclude_keys = excluded
            config.hydra.overrides.hydra.append(
                f"hydra.job.config.override_dirname.exclude_keys=[{','.join(excluded)}]"
            )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """`summary.csv/md/png` and `report.html` in the sweep folder after the last job (failed jobs
        included); a page that cannot be built is logged, never fails the sweep."""
        from lightning_resnet.reporting.html_report import write_report_page_or_log
        from lightning_resnet.sweeps.summary import write_summary

        try:
            write_summary(config.hydra.sweep.dir)
        except FileNotFoundError as err:  # no job got as far as writing its folder
            log.warning("no sweep summary: %s", err)
            return
        write_report_page_or_log(config.hydra.sweep.dir)
