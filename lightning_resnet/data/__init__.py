"""LightningDataModules: a shared base, the embedded digits set, and folder datasets."""

from lightning_resnet.data.base import ClassificationDataModule
from lightning_resnet.data.digits import DigitsDataModule
from lightning_resnet.data.folder import ImageFolderDataModule

__all__ = ["ClassificationDataModule", "DigitsDataModule", "ImageFolderDataModule"]
