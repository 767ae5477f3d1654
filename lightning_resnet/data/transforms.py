"""Train and eval transform pipelines (torchvision.transforms.v2), and what happens to a batch on the device.

Loaders ship uint8: a DataLoader worker resizes (an image file) and, with `data.augment_on=cpu`, augments,
and its batches leave it as uint8 (N, 3, H, W) tensors with their labels, so no float tensor travels
between processes (4x fewer bytes). `DeviceTransform` then runs once per batch on the training device,
after the transfer: with `augment_on=gpu` the batched augmentation (`data.batch_augment`), then float
conversion and normalisation, then (training only) MixUp/CutMix, which need float images.
Evaluation is resize only, never augmented; `eval_transform` is the one-image float pipeline of prediction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.utils.data import default_collate
from torchvision.transforms import v2

from lightning_resnet.data.batch_augment import BatchAugment, Normalize
from lightning_resnet.data.worker_batches import worker_batch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_float_normalized(mean: Sequence[float], std: Sequence[float]) -> list[nn.Module]:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]


def resize_ops(size: int | None, crop_ratio: float | None = None) -> list[nn.Module]:
    """Square `size`: a plain resize, or with `crop_ratio` (e.g. 0.875) a resize of the shorter side to
    size / crop_ratio followed by a centre crop (the torchvision reference's eval geometry).

    A PIL image becomes a uint8 tensor first (a view of its pixels, channels last) and the tensor is
    resized (antialiased bilinear): torch's uint8 kernel gives PIL's pixels (a few round one grey level
    apart) in about a third of PIL's time, and training, the pixel cache and prediction all resize this way.
    """
    if not size:
        return []
    if crop_ratio is None:
        return [v2.PILToTensor(), v2.Resize((size, size), antialias=True)]
    return [v2.PILToTensor(), v2.Resize(round(size / crop_ratio), antialias=True), v2.CenterCrop(size)]


def build_transform(
    mean: Sequence[float],
    std: Sequence[float],
    augment: Sequence[nn.Module] = (),
    resize: int | None = None,
    crop_ratio: float | None = None,
) -> v2.Compose:
    """resize (square, antialiased; see `resize_ops`) -> `augment` ops -> float in [0, 1] -> normalised."""
    return v2.Compose([*resize_ops(resize, crop_ratio), *augment, *to_float_normalized(mean, std)])


def worker_transform(
    augment: Sequence[nn.Module] = (), resize: int | None = None, crop_ratio: float | None = None
) -> v2.Compose:
    """One image file's transform in a DataLoader worker: resize -> per-image `augment` ops -> uint8 tensor.
    The ops get a PIL image: on a CPU, PIL's geometry kernels are several times faster than v2's on tensors."""
    to_pil = [v2.ToPILImage()] if augment and resize else []
    return v2.Compose([*resize_ops(resize, crop_ratio), *to_pil, *augment, v2.ToImage(), v2.ToPureTensor()])


def eval_transform(preprocessing: Mapping[str, Any]) -> v2.Compose:
    """The evaluation transform a `preprocessing` dict describes ({image_size, mean, std, crop_ratio?},
    as data modules write it into checkpoints): resize (and centre-crop), float, normalise."""
    spec = preprocessing
    return build_transform(spec["mean"], spec["std"], resize=spec["image_size"], crop_ratio=spec.get("crop_ratio"))


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


class Batch(NamedTuple):
    """A batch a dataset made in one piece (`PixelDataset.__getitems__`): uint8 images and their labels."""

    images: torch.Tensor
    labels: torch.Tensor


def collate(data: Batch | list[Any]) -> list[Any]:
    """The DataLoaders' collate function: a `Batch` passes as it is (in a worker, as a `worker_batch`, which
    hands a reused shared-memory block over), a list of samples is stacked (`default_collate`); either way
    [images, labels]."""
    if isinstance(data, Batch):
        return worker_batch(data.images, data.labels)
    return default_collate(data)


class DeviceTransform:
    """A uint8 batch on the training device -> the model's input, once per batch (`on_after_batch_transfer`).

    Every batch: float conversion and normalisation. Training batches first get `augment` (a `BatchAugment`
    returning floats in [0, 1], set with `data.augment_on=gpu`, each image drawing its own parameters) and
    afterwards `batch_op` (MixUp/CutMix, on normalised floats; their labels become soft targets).
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        augment: BatchAugment | None = None,
        batch_op: Callable[[torch.Tensor, torch.Tensor], Any] | None = None,
    ) -> None:
        self.normalize = Normalize(mean, std)
        self.augment = augment
        self.batch_op = batch_op

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, train: bool = False) -> tuple[torch.Tensor, Any]:
        if train and self.augment is not None:
            images = self.augment(images)
        images = self.normalize(images)
        if train and self.batch_op is not None:
            images, labels = self.batch_op(images, labels)
        return images, labels
