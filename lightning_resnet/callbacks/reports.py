"""`ReportWriter`: every run ends with its report, on disk and in TensorBoard.

At the start of fitting: the train-vs-val chart layout and a grid of augmented training images.
During test: logits, targets and penultimate features (via a hook on the backbone). At the end of
test: the report files (see `reporting.report`), the figures and projector data in TensorBoard,
and the hyper-parameters with the final figures in the HParams tab; the costliest figures are drawn
in a forked process meanwhile. matplotlib, scikit-learn and TensorBoard's plugins are imported when
they are first needed, not with this module.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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
        figure_process: draw the costliest figures in a forked process while this one logs to TensorBoard
            and draws the others (`reporting.report.start_report`); false: all in this process.
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
        figure_process: bool = True,
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
        self.figure_process = figure_process
        self.history: list[dict[str, Any]] | None = None  # set by tasks without a MetricHistory (evaluate)
        self.hparams: dict[str, Any] | None = None  # the run's HParams row (`run_hparams`), set by the tasks
        self.summary: dict[str, Any] = {}
        self._collector: OutputCollector | None = None
        self._features: torch.Tensor | None = None
        self._hook: RemovableHandle | None = None
        self._samples_logged = False

    # -- fitting -----------------------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from lightning_resnet.reporting.tensorboard import log_curves_layout, tensorboard_logger

        logger = tensorboard_logger(trainer)
        if logger is not None and trainer.is_global_zero:
            log_curves_layout(logger)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._samples_logged or self.train_samples <= 0 or trainer.global_step != 0:
            return
        self._samples_logged = True
        from lightning_resnet.reporting.tensorboard import tensorboard_logger

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
        # matplotlib, scikit-learn, TensorBoard's plugins: imported when a test ends, not with the callback
        from lightning_resnet.reporting.report import start_report
        from lightning_resnet.reporting.tensorboard import tensorboard_logger

        pending = start_report(
            collector,
            class_names,
            self.dirpath,
            history,
            self.monitor,
            self.mode,
            self.embedding,
            self.max_points,
            self.seed,
            self.figure_process,
        )
        self.summary = pending.summary
        logger = tensorboard_logger(trainer)
        if logger is not None and pending.order:  # while the figure process draws
            self._log_projector_and_hparams(logger, trainer, collector, class_names, history)
        report = pending.finish()
        if logger is not None and report.figures:
            _log_pngs(logger, {f"report/{name}": png for name, png in report.figures.items()}, trainer.global_step)
            logger.experiment.flush()

    def _log_projector_and_hparams(
        self,
        logger: TensorBoardLogger,
        trainer: pl.Trainer,
        collector: OutputCollector,
        class_names: list[str],
        history: list[dict[str, Any]] | None,
    ) -> None:
        """The projector data, the figures that are no curve, and the HParams row with the final figures."""
        from lightning_resnet.reporting.tensorboard import log_hparams_with_results, log_projector

        step = trainer.global_step
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


def _log_pngs(logger: TensorBoardLogger, pngs: Mapping[str, Path], step: int) -> None:
    """PNG files as TensorBoard images, their bytes as they are (`add_image` would decode and encode them again)."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    from lightning_resnet.compat import event_file_writer

    writer = event_file_writer(logger.experiment)
    for tag, png in pngs.items():
        with Image.open(png) as image:  # reads the header only
            (width, height), channels = image.size, len(image.getbands())
        image_proto = Summary.Image(
            height=height, width=width, colorspace=channels, encoded_image_string=png.read_bytes()
        )
        writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=image_proto)]), step)


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
