"""The embedded default dataset: scikit-learn's 1,797 8x8 handwritten digits, 10 classes, no download."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from lightning_resnet.data.base import ClassificationDataModule
from lightning_resnet.data.datasets import PixelDataset
from lightning_resnet.data.splits import check_fractions, split_indices
from lightning_resnet.data.transforms import channel_mean_std


class DigitsDataModule(ClassificationDataModule):
    """sklearn digits upsampled (bilinear) to `image_size` RGB, split by seeded stratified fractions.

    Args:
        fractions: train/val/test fractions of the 1,797 images.
        num_folds, fold: cross-validation instead of the val fraction: the test part stays held out
            and fold `fold` of a stratified k-fold over the rest is the validation split.
        **kwargs: see `ClassificationDataModule`.
    """

    def __init__(
        self,
        fractions: Sequence[float] = (0.7, 0.15, 0.15),
        num_folds: int | None = None,
        fold: int = 0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("image_size", 32)
        kwargs.setdefault("normalize", "auto")
        super().__init__(**kwargs)
        self.fractions = check_fractions(fractions, lengths=(3,))
        self.num_folds, self.fold = num_folds, fold

    @property
    def class_names(self) -> list[str]:
        return [str(d) for d in range(10)]

    def _load_splits(self) -> dict[str, PixelDataset]:
        digits = load_digits()
        pixels = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8)
        size = (self.image_size, self.image_size)
        images = F.interpolate(pixels, size=size, mode="bilinear", align_corners=False).clamp(0, 1)
        images = (images * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
        labels = torch.as_tensor(digits.target, dtype=torch.long)
        train, val, test = self.fractions
        parts = split_indices(
            labels.numpy(), val / (train + val), self.seed, test_fraction=test, num_folds=self.num_folds, fold=self.fold
        )
        return {split: PixelDataset(images, rows, labels[rows].tolist()) for split, rows in parts.items()}

    def _train_mean_std(self) -> tuple[list[float], list[float]]:
        return channel_mean_std(self.datasets["train"].batches())
