"""`ModelCostReport`: the model's parameters and GMACs at the run's image size, at the start of fitting.

Runs at fit start, after fine-tuning callbacks froze what they freeze, so "trainable" is the first
phase's count. Printed, logged to every logger (`model/*`) and kept for `metrics.json` (`model`).
"""

from __future__ import annotations

import logging

import pytorch_lightning as pl
from torch import nn

from lightning_resnet.models.cost import ModelCost, model_cost

log = logging.getLogger(__name__)


class ModelCostReport(pl.Callback):
    def __init__(self) -> None:
        self.cost: ModelCost | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        image_size = getattr(trainer.datamodule, "image_size", 224)
        network = nn.Sequential(pl_module.backbone, pl_module.head)  # the forward path, without the trainer
        self.cost = model_cost(network, image_size)
        log.info("%s: %s", pl_module.hparams.get("arch", type(pl_module).__name__), self.cost.summary())
        metrics = {
            "model/params_total": self.cost.params_total,
            "model/params_trainable": self.cost.params_trainable,
            "model/gmacs": self.cost.gmacs,
        }
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=0)
