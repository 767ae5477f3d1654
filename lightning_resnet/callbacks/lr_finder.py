"""`LRFinder`: Lightning's learning-rate range test before training, with its plot and suggestion kept in
the run folder, and the suggestion trained with when the config says `optimizer.lr=find`.

    python -m lightning_resnet callbacks=[default,lr_finder]                   # report only
    python -m lightning_resnet callbacks=[default,lr_finder] optimizer.lr=find # and train with it

The search shows Lightning's tqdm bar only where the run shows one (a terminal, `TQDMProgressBar`);
off a terminal (one log line per epoch) it is quiet, and its result is one log line.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import LearningRateFinder, TQDMProgressBar

from lightning_resnet.compat import quiet_search_bar

log = logging.getLogger(__name__)

FIND = "find"  # the value of optimizer.lr that asks for the suggestion


class LRFinder(LearningRateFinder):
    """Runs the range test at the start of fitting (not when resuming: the checkpoint has the optimizer),
    writes `<dirpath>/lr_find.png` (loss against lr, the suggestion marked) and keeps `summary` for
    `metrics.json`. With `lr: find` (the config's `optimizer.lr`) the model's optimizer partial gets the
    suggestion and the optimizer and scheduler are built again with it; otherwise they are left as they are.
    """

    def __init__(
        self, dirpath: str | None = None, lr: float | str | None = None, num_training: int = 100, **kwargs: Any
    ) -> None:
        super().__init__(num_training_steps=num_training, update_attr=False, **kwargs)
        self.dirpath = dirpath
        self.use_suggestion = lr == FIND
        self.summary: dict[str, Any] | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.ckpt_path is not None:
            log.info("lr finder: skipped, resuming from %s", trainer.ckpt_path)
            return
        with quiet_search_bar(not isinstance(trainer.progress_bar_callback, TQDMProgressBar)):
            self.lr_find(trainer, pl_module)
        if self.optimal_lr is None:  # fast_dev_run: Lightning skips the search
            return
        suggestion = self.optimal_lr.suggestion()
        self.summary = {
            "suggestion": suggestion,
            "num_training": len(self.optimal_lr.results.get("lr", [])),
            "min_lr": self._min_lr,
            "max_lr": self._max_lr,
        }
        log.info("lr finder: suggestion %s (%d steps from %g to %g)", suggestion, *list(self.summary.values())[1:])
        if self.dirpath and trainer.is_global_zero:
            self._plot(Path(self.dirpath) / "lr_find.png")
        if self.use_suggestion:
            self._train_with(trainer, pl_module, suggestion)

    def _train_with(self, trainer: pl.Trainer, pl_module: pl.LightningModule, lr: float | None) -> None:
        if lr is None:
            raise RuntimeError(
                f"optimizer.lr=find: the lr finder found no suggestion in {self.summary['num_training']} steps "
                "(too few, or the loss diverged at once); raise callbacks.lr_finder.num_training or set optimizer.lr"
            )
        pl_module.optimizer_factory = functools.partial(pl_module.optimizer_factory, lr=lr)
        trainer.strategy.setup_optimizers(trainer)  # configure_optimizers again: optimizer and scheduler
        log.info("optimizer.lr=find: training with lr=%g", lr)

    def _plot(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure = self.optimal_lr.plot(suggest=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(figure)
