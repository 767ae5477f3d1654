"""Callbacks the train task adds by config."""

from lightning_resnet.callbacks.history import MetricHistory

__all__ = ["MetricHistory"]
