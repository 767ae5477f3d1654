"""Train and eval transform pipelines (torchvision.transforms.v2).

Train: `augment` ops, then float conversion and normalisation. Eval: resize only, never augmented.
Batch-level augmentation (MixUp/CutMix) runs in the training DataLoader's collate function, or,
with `data.augment_on=gpu`, all of it runs on the device in `DeviceAugment`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import default_collate
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_float_normalized(mean: Sequence[float], std: Sequence[float]) -> list[nn.Module]:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]


def resize_ops(size: int | None, crop_ratio: float | None = None) -> list[nn.Module]:
    """Square `size`: a plain resize, or with `crop_ratio` (e.g. 0.875) a resize of the shorter side to
    size / crop_ratio followed by a centre crop (the torchvision reference's eval geometry)."""
    if not size:
        return []
    if crop_ratio is None:
        return [v2.Resize((size, size), antialias=True)]
    return [v2.Resize(round(size / crop_ratio), antialias=True), v2.CenterCrop(size)]


def build_transform(
    mean: Sequence[float],
    std: Sequence[float],
    augment: Sequence[nn.Module] = (),
    resize: int | None = None,
    crop_ratio: float | None = None,
) -> v2.Compose:
    """resize (square, antialiased; see `resize_ops`) -> `augment` ops -> float in [0, 1] -> normalised."""
    return v2.Compose([*resize_ops(resize, crop_ratio), *augment, *to_float_normalized(mean, std)])


def eval_transform(preprocessing: Mapping[str, Any]) -> v2.Compose:
    """The evaluation transform a `preprocessing` dict describes ({image_size, mean, std, crop_ratio?},
    as data modules write it into checkpoints): resize (and centre-crop), float, normalise."""
    spec = preprocessing
    return build_transform(spec["mean"], spec["std"], resize=spec["image_size"], crop_ratio=spec.get("crop_ratio"))


class BatchAugment:
    """A collate function: stack the samples, then apply one of `ops` (chosen at random), e.g. MixUp or CutMix.

    The labels become soft (N, num_classes) targets. A class (not a closure) so DataLoader workers can pickle it.
    """

    def __init__(self, ops: Sequence[Callable[[torch.Tensor, torch.Tensor], Any]]) -> None:
        self.op = ops[0] if len(ops) == 1 else v2.RandomChoice(list(ops))

    def __call__(self, samples: list[Any]) -> Any:
        return self.op(*default_collate(samples))


def channel_mean_std(batches: Iterable[torch.Tensor]) -> tuple[list[float], list[float]]:
    """Per-channel mean and (population) std in [0, 1] over batches of uint8 or [0, 1] float images
    shaped (N, C, H, W), accumulated in float64, so a set need never be in memory as floats at once."""
    total = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    count = 0
    for batch in batches:
        images = batch.to(torch.float64) / 255.0 if batch.dtype == torch.uint8 else batch.to(torch.float64)
        total += images.sum(dim=(0, 2, 3))
        squares += images.square().sum(dim=(0, 2, 3))
        count += images.numel() // 3
    mean = total / count
    std = (squares / count - mean.square()).clamp(min=0).sqrt()
    return mean.tolist(), std.tolist()


class DeviceAugment:
    """Training augmentation on a uint8 batch already on the device (`data.augment_on=gpu`).

    The per-image `augment` ops run image by image, so each image draws its own random parameters,
    exactly as in a DataLoader worker (a v2 op applied to a whole batch tensor would draw once for
    all of them). Then float conversion and normalisation of the batch, then the batch op (MixUp/CutMix).
    """

    def __init__(
        self,
        augment: Sequence[nn.Module],
        mean: Sequence[float],
        std: Sequence[float],
        batch_op: Callable[[torch.Tensor, torch.Tensor], Any] | None = None,
    ) -> None:
        self.augment = v2.Compose(list(augment)) if augment else None
        self.normalize = v2.Compose(to_float_normalized(mean, std)[1:])  # ToDtype(scale) + Normalize
        self.batch_op = batch_op

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.augment is not None:
            images = torch.stack([self.augment(image) for image in images])
        images = self.normalize(images)
        if self.batch_op is not None:
            images, labels = self.batch_op(images, labels)
        return images, labels
