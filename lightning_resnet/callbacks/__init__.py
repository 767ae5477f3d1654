"""Callbacks the train task adds by config."""

from lightning_resnet.callbacks.finetune import FinetuneStrategy
from lightning_resnet.callbacks.history import MetricHistory

__all__ = ["FinetuneStrategy", "MetricHistory"]
