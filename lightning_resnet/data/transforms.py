"""Train and eval transform pipelines (torchvision.transforms.v2).

Train: `augment` ops, then float conversion and normalisation. Eval: resize only, never augmented.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_float_normalized(mean: Sequence[float], std: Sequence[float]) -> list[nn.Module]:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]


def build_transform(
    mean: Sequence[float], std: Sequence[float], augment: Sequence[nn.Module] = (), resize: int | None = None
) -> v2.Compose:
    """`resize` (square, antialiased) -> `augment` ops -> float in [0, 1] -> normalised."""
    ops: list[nn.Module] = [v2.Resize((resize, resize), antialias=True)] if resize else []
    return v2.Compose([*ops, *augment, *to_float_normalized(mean, std)])


def channel_mean_std(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 or [0, 1] float images shaped (N, C, H, W)."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    return x.mean(dim=(0, 2, 3)).tolist(), x.std(dim=(0, 2, 3)).tolist()
