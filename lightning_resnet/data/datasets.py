"""The two `(image, label)` datasets every data module uses: image files, or uint8 pixels.

`paths` and `labels` stay inspectable on both, so splits, reports and class counts never need to
know which one a split is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from lightning_resnet.data.images import DEFAULT_MAX_PIXELS, load_rgb

UNLABELLED = -1  # the label of images to predict


class ImageFileDataset(Dataset):
    """Files decoded with `load_rgb` at every access, then `transform`.

    `intensity`: how 16-bit images become 8 bits; `max_pixels`: larger images are bad images, named;
    `draft_size`: the side `transform` resizes to first, so a very large JPEG may be decoded at reduced
    scale (see `data.images`).
    """

    def __init__(
        self,
        paths: Sequence[Path],
        labels: Sequence[int] | None = None,
        transform: Callable | None = None,
        intensity: str = "fixed",
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        draft_size: int | None = None,
    ) -> None:
        self.paths = list(paths)
        self.labels = list(labels) if labels is not None else [UNLABELLED] * len(self.paths)
        self.transform, self.intensity = transform, intensity
        self.max_pixels, self.draft_size = max_pixels, draft_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = load_rgb(self.paths[index], self.intensity, self.max_pixels, self.draft_size)
        return (self.transform(image) if self.transform else image), self.labels[index]


class PixelDataset(Dataset):
    """Rows of a (N, 3, H, W) uint8 array already at the training size, then `transform`.

    `pixels` is a tensor in memory (digits, `data.cache=memory`) or a memory-mapped `PixelFile`
    (`data.cache=disk`); `rows` are this split's rows of it, so every split shares one array.
    """

    resized = True  # the data module leaves the resize out of this dataset's transforms

    def __init__(
        self,
        pixels: Any,
        rows: Sequence[int],
        labels: Sequence[int],
        paths: Sequence[Path] = (),
        transform: Callable | None = None,
    ) -> None:
        self.pixels, self.rows = pixels, np.asarray(rows, dtype=np.int64)
        self.labels, self.paths, self.transform = list(labels), list(paths), transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = self.pixels[int(self.rows[index])]
        return (self.transform(image) if self.transform else image), self.labels[index]

    def images(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """The untransformed uint8 images of positions `start:stop` of this split, as one tensor."""
        return self.pixels[torch.as_tensor(self.rows[start:stop])]

    def batches(self, size: int = 256) -> Iterator[torch.Tensor]:
        """The untransformed images in chunks of `size`, so a large split is never in memory at once."""
        return (self.images(start, start + size) for start in range(0, len(self.rows), size))
