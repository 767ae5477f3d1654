"""TensorBoard as the dashboard: curve layout, hyper-parameters with final figures, projector data."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger

# Train and val of one metric on one chart (TensorBoard's "Custom Scalars" tab).
CURVES_LAYOUT = {
    "train vs val": {
        "loss": ["Multiline", ["train/loss", "val/loss"]],
        "accuracy": ["Multiline", ["train/acc", "val/acc"]],
        "macro F1": ["Multiline", ["train/f1", "val/f1"]],
    }
}
PROJECTOR_TAG = "test_features"


def tensorboard_logger(trainer: pl.Trainer) -> TensorBoardLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)


def log_curves_layout(logger: TensorBoardLogger) -> None:
    logger.experiment.add_custom_scalars(CURVES_LAYOUT)


def log_hparams_with_results(logger: TensorBoardLogger, results: dict[str, float], step: int) -> None:
    """The run's hyper-parameters (as logged so far) with its final figures, for the HParams table.

    Results go under `hparams/` so they do not collide with the epoch curves of the same metrics.
    """
    logger.log_hyperparams(logger.hparams, metrics={f"hparams/{k}": v for k, v in results.items()}, step=step)


def log_projector(
    logger: TensorBoardLogger,
    features: torch.Tensor,
    targets: Sequence[int],
    predicted: Sequence[int],
    class_names: Sequence[str],
    thumbnails: torch.Tensor,
    step: int,
) -> None:
    """Features with true/predicted class names and image sprites, for TensorBoard's Projector tab."""
    metadata: list[Any] = [[class_names[t], class_names[p]] for t, p in zip(targets, predicted, strict=True)]
    logger.experiment.add_embedding(
        features,
        metadata=metadata,
        metadata_header=["label", "predicted"],
        label_img=thumbnails.float() / 255.0,
        global_step=step,
        tag=PROJECTOR_TAG,
    )
