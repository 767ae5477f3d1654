"""Progress output that suits where it goes: the interactive bar on a terminal, one log line per epoch
elsewhere (a SLURM job, nohup, CI), where a bar would write a line per refresh.

`conf/callbacks/progress_bar.yaml` builds it with `progress_bar(refresh_rate=...)`.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ProgressBar, TQDMProgressBar

log = logging.getLogger(__name__)

STYLES = ("auto", "bar", "lines")


def progress_bar(refresh_rate: int = 10, style: str = "auto") -> ProgressBar:
    """`style: auto`: Lightning's tqdm bar when stdout is a terminal and `refresh_rate` > 0, else
    `EpochLogLine` (also with `refresh_rate=0` on a terminal: no bar, one line per epoch);
    `bar` / `lines` choose one whatever stdout is."""
    if style not in STYLES:
        from lightning_resnet.errors import ConfigError

        raise ConfigError(f"callbacks.progress_bar.style={style!r}; valid: {', '.join(STYLES)}")
    if style == "bar" or (style == "auto" and refresh_rate > 0 and sys.stdout.isatty()):
        return TQDMProgressBar(refresh_rate=refresh_rate)
    return EpochLogLine()


class EpochLogLine(ProgressBar):
    """One `logging` line per training epoch (the run's `train.log` under Hydra, and stderr):

    `epoch 1/10  train loss 0.4123 acc 0.871  val loss 0.3510 acc 0.902  lr 1.00e-03  12.3s`

    A `ProgressBar`, so Lightning adds no bar of its own; the LR finder's `disable()` silences it.
    """

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._started = 0.0
        self._lr: float | None = None

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """A run resumed mid-epoch (after a SIGTERM) continues its epoch without `on_train_epoch_start`."""
        self.on_train_epoch_start(trainer, pl_module)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.monotonic()
        groups = trainer.optimizers[0].param_groups if trainer.optimizers else []
        self._lr = max((float(g["lr"]) for g in groups), default=None)  # the head's with per-group LRs

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._enabled and trainer.is_global_zero:
            log.info(self.line(trainer, time.monotonic() - self._started))

    def line(self, trainer: pl.Trainer, seconds: float) -> str:
        metrics = trainer.callback_metrics
        parts = [f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs if trainer.max_epochs else '?'}"]
        for stage in ("train", "val"):
            figures = [
                f"{name} {_number(metrics[f'{stage}/{name}'])}"
                for name in ("loss", "acc")
                if f"{stage}/{name}" in metrics
            ]
            if figures:
                parts.append(f"{stage} {' '.join(figures)}")
        if self._lr is not None:
            parts.append(f"lr {self._lr:.2e}")
        parts.append(f"{seconds:.1f}s")
        return "  ".join(parts)


def _number(value: Any) -> str:
    return f"{float(value.item() if isinstance(value, torch.Tensor) else value):.4f}"
