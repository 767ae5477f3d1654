"""The two `(image, label)` datasets every data module uses: image files, or uint8 pixels.

`paths` and `labels` stay inspectable on both, so splits, reports and class counts never need to
know which one a split is.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from lightning_resnet.data.images import DEFAULT_MAX_PIXELS, load_rgb
from lightning_resnet.data.transforms import Batch
from lightning_resnet.data.worker_batches import batch_buffer

UNLABELLED = -1  # the label of images to predict


class ImageFileDataset(Dataset):
    """Files decoded with `load_rgb` at every access, then `transform`.

    `intensity`: how 16-bit images become 8 bits; `max_pixels`: larger images are bad images, named;
    `draft_size`: the side `transform` resizes to first, so a large JPEG may be decoded at reduced scale
    (see `data.images`). The paths are kept as one array of bytes, not a list of `Path` objects, which a
    DataLoader worker would copy page by page as it reads them (reading an object writes its reference
    count): 1.28 M ImageNet paths are 67 MB in one block, shared by every worker, instead of 550 MB of
    `Path` objects in the main process and again in each worker by the end of an epoch. `paths` reads
    as a list.
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
        self._paths = np.array([os.fsencode(p) for p in paths], dtype=np.bytes_)
        self.labels = list(labels) if labels is not None else [UNLABELLED] * len(self._paths)
        self.transform, self.intensity = transform, intensity
        self.max_pixels, self.draft_size = max_pixels, draft_size

    @property
    def paths(self) -> list[Path]:
        return [Path(os.fsdecode(path)) for path in self._paths]

    @property
    def names(self) -> list[str]:
        """The paths as strings: what a fingerprint hashes, with no `Path` parsed per file."""
        return [os.fsdecode(path) for path in self._paths]

    def __len__(self) -> int:
        return len(self._paths)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path = os.fsdecode(self._paths[index])
        image = load_rgb(path, self.intensity, self.max_pixels, self.draft_size)
        return (self.transform(image) if self.transform else image), self.labels[index]


class PixelDataset(Dataset):
    """Rows of a (N, 3, H, W) uint8 array already at the training size, then `transform`, a batch at a time.

    `pixels` is a tensor in memory (digits, `data.cache=memory`) or a memory-mapped `PixelFile`
    (`data.cache=disk`); `rows` are this split's rows of it, so every split shares one array.
    `transform` takes a (N, 3, H, W) uint8 batch and returns one (a `BatchAugment`: every image draws its
    own parameters). The DataLoader's fetcher calls `__getitems__` with a whole batch of indices: one
    gather from the array and one transform call, no Python work per image; `dataset[i]` is a batch of one.
    """

    resized = True  # the data module leaves the resize out of this dataset's transforms
    batched = True  # `transform` works on batches

    def __init__(
        self,
        pixels: Any,
        rows: Sequence[int],
        labels: Sequence[int],
        paths: Sequence[Path] = (),
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.pixels, self.rows = pixels, np.asarray(rows, dtype=np.int64)
        self.labels, self.paths, self.transform = list(labels), list(paths), transform
        self._rows = torch.from_numpy(self.rows)
        self._labels = torch.as_tensor(self.labels, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        images, labels = self.__getitems__([index])
        return images[0], int(labels[0])

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        """The images and labels of positions `indices`, transformed as one batch."""
        positions = torch.as_tensor(indices, dtype=torch.int64)
        rows = self._rows[positions]
        if self.transform is None:  # straight into shared memory in a worker: nothing copied on the way out
            return Batch(self._gather(rows, batch_buffer), self._labels[positions])
        return Batch(self.transform(self._gather(rows, torch.empty)), self._labels[positions])

    def _gather(self, rows: torch.Tensor, allocate: Callable[..., torch.Tensor] = torch.empty) -> torch.Tensor:
        """The images of `rows` in a tensor from `allocate(shape, dtype=)`."""
        out = allocate((len(rows), *self.pixels.shape[1:]), dtype=torch.uint8)
        array = self.pixels.numpy() if isinstance(self.pixels, torch.Tensor) else self.pixels.array
        # np.take is a memcpy per row, memory-mapped or not (a fancy index of a memmap is ~10x slower); mode="clip"
        # writes straight into `out` ("raise" buffers a copy), and `rows` are valid: `_rows` indexing raised. Rows
        # are read in the batch's order: sorting them buys no sequential read when a batch's rows lie far apart.
        np.take(array, rows.numpy(), axis=0, out=out.numpy(), mode="clip")
        return out

    def images(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """The untransformed uint8 images of positions `start:stop` of this split, as one tensor."""
        return self._gather(self._rows[start:stop])

    def batches(self, size: int = 256) -> Iterator[torch.Tensor]:
        """The untransformed images in chunks of `size`, so a large split is never in memory at once."""
        return (self.images(start, start + size) for start in range(0, len(self.rows), size))
