"""The embedded default dataset: scikit-learn's 1,797 8x8 handwritten digits, 10 classes, no download."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch.utils.data import Dataset

from lightning_resnet.data.base import ClassificationDataModule
from lightning_resnet.data.splits import stratified_split, train_val_split
from lightning_resnet.data.transforms import channel_mean_std
from lightning_resnet.errors import ConfigError


class TensorImageDataset(Dataset):
    """uint8 images (N, 3, H, W) in memory with integer labels and an optional transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable | None = None) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = self.images[index]
        return (self.transform(image) if self.transform else image), int(self.labels[index])


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
        if len(fractions) != 3:
            raise ConfigError(f"data.fractions must be [train, val, test], got {list(fractions)}")
        self.fractions = list(fractions)
        self.num_folds, self.fold = num_folds, fold

    @property
    def class_names(self) -> list[str]:
        return [str(d) for d in range(10)]

    def _resize(self, dataset: Dataset | None = None) -> None:
        return None  # images are upsampled once, in memory

    def _load_splits(self) -> dict[str, TensorImageDataset]:
        digits = load_digits()
        pixels = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8)
        size = (self.image_size, self.image_size)
        images = F.interpolate(pixels, size=size, mode="bilinear", align_corners=False).clamp(0, 1)
        images = (images * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
        labels = torch.as_tensor(digits.target, dtype=torch.long)
        train_val_fraction = self.fractions[0] + self.fractions[1]
        pool, test = stratified_split(labels.numpy(), [train_val_fraction, self.fractions[2]], seed=self.seed)
        val_fraction = self.fractions[1] / train_val_fraction
        train, val = train_val_split(labels[pool].numpy(), val_fraction, self.seed, self.num_folds, self.fold)
        parts = {"train": pool[train], "val": pool[val], "test": test}
        return {split: TensorImageDataset(images[idx], labels[idx]) for split, idx in parts.items()}

    def _train_mean_std(self) -> tuple[list[float], list[float]]:
        return channel_mean_std(self.datasets["train"].images.split(256))
