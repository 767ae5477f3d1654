"""Callbacks the train task adds by config."""

from lightning_resnet.callbacks.checkpointing import LastCheckpoint
from lightning_resnet.callbacks.finetune import FinetuneStrategy
from lightning_resnet.callbacks.history import MetricHistory
from lightning_resnet.callbacks.lr_finder import LRFinder
from lightning_resnet.callbacks.model_cost import ModelCostReport
from lightning_resnet.callbacks.progress import EpochLogLine
from lightning_resnet.callbacks.reports import ReportWriter

__all__ = [
    "EpochLogLine",
    "FinetuneStrategy",
    "LRFinder",
    "LastCheckpoint",
    "MetricHistory",
    "ModelCostReport",
    "ReportWriter",
]
