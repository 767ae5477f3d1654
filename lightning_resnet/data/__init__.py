"""LightningDataModules: a shared base, the embedded digits set, and folder datasets."""

from lightning_resnet.data.base import ClassificationDataModule
from lightning_resnet.data.digits import DigitsDataModule

__all__ = ["ClassificationDataModule", "DigitsDataModule"]
