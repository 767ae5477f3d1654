"""Backbones, losses, schedulers and the LightningModule that ties them together."""

from lightning_resnet.models.backbones import BACKBONES, build_backbone
from lightning_resnet.models.classifier import ResNetClassifier
from lightning_resnet.models.losses import CrossEntropyLoss, FocalLoss

__all__ = ["BACKBONES", "CrossEntropyLoss", "FocalLoss", "ResNetClassifier", "build_backbone"]
