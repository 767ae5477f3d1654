"""`ReportWriter`: every run ends with its report, on disk and in TensorBoard.

At the start of fitting: the train-vs-val chart layout and a grid of augmented training images.
During test: logits, targets and penultimate features (via a hook on the backbone). At the end of
test: the report files (see `reporting.report`), the figures and projector data in TensorBoard,
and the hyper-parameters with the final figures in the HParams tab.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.data import DistributedSampler
from torch.utils.hooks import RemovableHandle
from torchvision.utils import make_grid

from lightning_resnet.callbacks.history import MetricHistory
from lightning_resnet.errors import ConfigError
from lightning_resnet.reporting.collector import OutputCollector, denormalize, merge_ranks
from lightning_resnet.reporting.embedding import PROJECTIONS, subsample
from lightning_resnet.reporting.history import best_value
from lightning_resnet.reporting.report import write_report
from lightning_resnet.reporting.tensorboard import (
    log_curves_layout,
    log_hparams_with_results,
    log_projector,
    tensorboard_logger,
)

log = logging.getLogger(__name__)


class ReportWriter(pl.Callback):
    """Writes the end-of-test report into `dirpath` and TensorBoard.

    Args:
        dirpath: where the report files go (the run directory).
        monitor, mode: the metric (and `max`/`min`) that picks the best epoch, marked on the curves
            (the run's `monitor` and `monitor_mode`).
        embedding: 2-D projection of the features: `pca` or `tsne` (slower).
        num_mistakes: how many of the most confident wrong predictions `mistakes.png` shows.
        max_points: cap on the samples used for the embedding, silhouette and projector.
        train_samples: augmented training images logged as a grid when fitting starts (0 = none).
        seed: seed of the subsampling and projections.
    """

    def __init__(
        self,
        dirpath: str,
        monitor: str,
        mode: str,
        embedding: str = "pca",
        num_mistakes: int = 16,
        max_points: int = 2000,
        train_samples: int = 32,
        seed: int | None = 0,
    ) -> None:
        if embedding not in PROJECTIONS:
            raise ConfigError(f"callbacks.reports.embedding={embedding!r}; valid: {', '.join(PROJECTIONS)}")
        self.dirpath = Path(dirpath)
        self.monitor, self.mode = monitor, mode
        self.embedding = embedding
        self.num_mistakes = num_mistakes
        self.max_points = max_points
        self.train_samples = train_samples
        self.seed = seed or 0
        self.history: list[dict[str, Any]] | None = None  # set by tasks without a MetricHistory (evaluate)
        self.hparams: dict[str, Any] | None = None  # the run's HParams row (`run_hparams`), set by the tasks
        self.summary: dict[str, Any] = {}
        self._collector: OutputCollector | None = None
        self._features: torch.Tensor | None = None
        self._hook: RemovableHandle | None = None
        self._samples_logged = False

    # -- fitting -----------------------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        logger = tensorboard_logger(trainer)
        if logger is not None and trainer.is_global_zero:
            log_curves_layout(logger)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._samples_logged or self.train_samples <= 0 or trainer.global_step != 0:
            return
        self._samples_logged = True
        logger = tensorboard_logger(trainer)
        if logger is None or not trainer.is_global_zero:
            return
        mean, std = _normalization(pl_module)
        images = denormalize(batch[0][: self.train_samples].detach().float(), mean, std)
        grid = make_grid(images, nrow=8, padding=2)
        logger.experiment.add_image("samples/train_augmented", grid, global_step=0)

    # -- testing -----------------------------------------------------------------------------------
    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        mean, std = _normalization(pl_module)
        self._collector = OutputCollector(mean, std, num_mistakes=self.num_mistakes)
        self._hook = pl_module.backbone.register_forward_hook(self._keep_features)

    def _keep_features(self, module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> None:
        self._features = output

    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._collector is None or self._features is None:
            return
        self._collector.update(batch[0], outputs["logits"], outputs["target"], self._features)
        self._features = None

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        collector, self._collector = self._collector, None
        if collector is not None and trainer.world_size > 1:
            collector = _gather_on_rank_zero(collector, trainer)
        if collector is None or not trainer.is_global_zero:
            return
        history = self.history if self.history is not None else _history(trainer)
        class_names = list(pl_module.hparams.get("class_names") or range(pl_module.hparams["num_classes"]))
        class_names = [str(name) for name in class_names]
        report = write_report(
            collector,
            class_names,
            self.dirpath,
            history,
            self.monitor,
            self.mode,
            self.embedding,
            self.max_points,
            self.seed,
        )
        self.summary = report.summary
        logger = tensorboard_logger(trainer)
        if logger is not None and report.figures:
            self._log_to_tensorboard(logger, trainer, collector, class_names, history, report.figures)

    def _log_to_tensorboard(
        self,
        logger: TensorBoardLogger,
        trainer: pl.Trainer,
        collector: OutputCollector,
        class_names: list[str],
        history: list[dict[str, Any]] | None,
        figs: dict[str, Path],
    ) -> None:
        """Report PNGs as images, the projector data, and the HParams row with the final figures."""
        step = trainer.global_step
        for name, png in figs.items():
            with Image.open(png) as image:
                pixels = np.asarray(image.convert("RGB"))
            logger.experiment.add_image(f"report/{name}", pixels, global_step=step, dataformats="HWC")
        logits, targets, features, thumbnails = collector.stacked()
        chosen = torch.as_tensor(subsample(len(targets), self.max_points, self.seed))
        log_projector(
            logger,
            features[chosen],
            targets[chosen].tolist(),
            logits[chosen].argmax(dim=1).tolist(),
            class_names,
            thumbnails[chosen],
            step,
        )
        # Figures that are no curve yet, logged once each, in the group of their split: `train/best_acc`,
        # `val/best_acc` (best epoch of the run), `test/silhouette`. A `best/` or `hparams/` group would sort
        # ahead of `test/`, `train/`, `val/` in the Time Series tab and repeat what those hold.
        extra = {f"{key.split('/')[0]}/best_acc": best_value(history or [], key) for key in ("train/acc", "val/acc")}
        extra["test/silhouette"] = self.summary.get("silhouette")
        extra = {k: float(v) for k, v in extra.items() if v is not None}
        if extra:
            logger.log_metrics(extra, step=step)
        # The HParams row's metrics: existing tags of this run (the plugin shows their last values).
        logged = [k for k in trainer.callback_metrics if k.startswith("test/")]
        fitted = _history(trainer) or [{}]  # a run that fitted has its epoch curves in the event file
        logged = [*(k for k in ("val/acc", "val/loss") if fitted[-1].get(k) is not None), *logged]
        if self.hparams is not None:
            log_hparams_with_results(logger, self.hparams, [*logged, *sorted(extra)])
        logger.experiment.flush()


def _gather_on_rank_zero(collector: OutputCollector, trainer: pl.Trainer) -> OutputCollector | None:
    """Every rank's share of the test set, merged on rank 0 in test order (None on the other ranks)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return collector
    parts: list[Any] | None = [None] * trainer.world_size if trainer.is_global_zero else None
    torch.distributed.gather_object(collector, parts, dst=0)
    if parts is None:
        return None
    loaders = trainer.test_dataloaders
    sampler = getattr(loaders[0] if isinstance(loaders, (list, tuple)) else loaders, "sampler", None)
    if isinstance(sampler, DistributedSampler) and not sampler.shuffle:
        return merge_ranks(parts, num_samples=len(sampler.dataset))
    log.warning("test sampler %s: the report has every rank's samples, not in test order", type(sampler).__name__)
    return merge_ranks(parts, num_samples=None)


def _normalization(pl_module: pl.LightningModule) -> tuple[list[float], list[float]]:
    spec = getattr(pl_module, "preprocessing", None) or {}
    return list(spec.get("mean", [0.0, 0.0, 0.0])), list(spec.get("std", [1.0, 1.0, 1.0]))


def _history(trainer: pl.Trainer) -> list[dict[str, Any]] | None:
    history = next((c for c in trainer.callbacks if isinstance(c, MetricHistory)), None)
    return history.epochs if history is not None else None


def log_run_hparams(trainer: pl.Trainer, hparams: Mapping[str, Any]) -> None:
    """Give every logger the run's hyper-parameters (`run_hparams`; TensorBoard: `hparams.yaml`), and the
    report writer the HParams row it writes with the final figures once the test ends."""
    row = {k: v for k, v in hparams.items() if v is not None}
    for logger in trainer.loggers:
        logger.log_hyperparams(row)
    for callback in trainer.callbacks:
        if isinstance(callback, ReportWriter):
            callback.hparams = row
