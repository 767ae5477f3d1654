"""Callbacks the train task adds by config."""

from lightning_resnet.callbacks.history import MetricHistory
from lightning_resnet.callbacks.reports import ReportWriter

__all__ = ["MetricHistory", "ReportWriter"]
