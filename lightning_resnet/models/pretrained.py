"""The input pipeline pretrained weights were trained with: mean, std, image size and crop.

`data.normalize: weights` / `data.image_size: weights` resolve to these (see `builders`), so a
pretrained backbone sees inputs like those it learned from. torchvision weights give their
`weights.transforms()` values: resize the shorter side to `resize_size` (256, or 232 for the V2
weights), centre-crop `crop_size` (224), i.e. `crop_ratio = crop_size / resize_size`. A converted
Keras file gives its own (`[-1, 1]` scaling, 224 px squashed, no crop). Without pretrained weights (or
with a file that does not say), ImageNet's mean/std and 224 px.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from lightning_resnet.models.backbones import looks_like_path, weights_enum

IMAGENET_PREPROCESSING = {
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "image_size": 224,
    "crop_ratio": None,
}


def pretrained_preprocessing(arch: str, weights: str | None) -> dict[str, Any]:
    """{"mean", "std", "image_size", "crop_ratio"} the weights expect; ImageNet's defaults when they do not say."""
    if weights is None:
        return dict(IMAGENET_PREPROCESSING)
    if looks_like_path(str(weights)):
        file = Path(weights).expanduser()
        saved = torch.load(file, map_location="cpu", weights_only=True, mmap=True) if file.is_file() else {}
        found = saved.get("preprocessing") if isinstance(saved, Mapping) else None
        return {**IMAGENET_PREPROCESSING, **(found or {})}
    transform = weights_enum(arch, weights).transforms()  # torchvision's ImageClassification preset
    crop, resize = transform.crop_size[0], transform.resize_size[0]
    return {"mean": list(transform.mean), "std": list(transform.std), "image_size": crop, "crop_ratio": crop / resize}
