"""`LastCheckpoint`: `last.ckpt` is always the last completed epoch, and a SIGTERM saves the current state.

Lightning's `ModelCheckpoint(save_last=True)` rewrites `last.ckpt` only in epochs where it also saved a
top-k file, so with a metric that stops improving `last.ckpt` stays at an old epoch and a resume repeats
epochs. This callback writes it at the end of every training epoch instead (after validation and after
`MetricHistory` recorded the epoch), with everything a resume needs (optimizer, scheduler, callbacks),
through the trainer's checkpoint IO, i.e. atomically (`lightning_resnet.checkpoints.AtomicCheckpointIO`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Checkpoint
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class LastCheckpoint(Checkpoint):
    """Writes `<dirpath>/<filename>` at every training epoch's end, at the end of fitting, and on SIGTERM.

    On SIGTERM (a kill, SLURM preemption, a CI timeout) Lightning stops at the next batch boundary by
    raising `SIGTERMException`; the state at that point is saved, as Lightning's SLURM requeue does, so a
    resume with `ckpt_path=last` continues the interrupted epoch. Other exceptions save nothing: the state
    may be broken (a NaN loss), and `last.ckpt` keeps the last completed epoch.
    """

    def __init__(self, dirpath: str, filename: str = "last.ckpt") -> None:
        self.dirpath = dirpath
        self.filename = filename
        self._saved_step: int | None = None

    @property
    def path(self) -> Path:
        return Path(self.dirpath) / self.filename

    @staticmethod
    def _fitting(trainer: pl.Trainer) -> bool:
        return trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking and not trainer.fast_dev_run

    def _save(self, trainer: pl.Trainer) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)
        self._saved_step = trainer.global_step

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._fitting(trainer):
            self._save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Fitting that stopped mid-epoch (`max_steps`, `max_time`) has steps no epoch end saved.
        if self._fitting(trainer) and trainer.global_step != self._saved_step:
            self._save(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException) and self._fitting(trainer):
            self._save(trainer)
            log.warning(
                "SIGTERM: state at epoch %d, step %d saved to %s", trainer.current_epoch, trainer.global_step, self.path
            )
