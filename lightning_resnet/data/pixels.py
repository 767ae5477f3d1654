"""The pre-resized pixel cache (`data.cache`): every image decoded once to uint8 at the training size.

Decoding and resizing a JPEG costs milliseconds; reading its resized pixels from memory costs
microseconds. The cache holds the images exactly as the PIL path has them after its resize (same
`load_rgb`, same `resize_ops`), so the training augment ops, applied to the uint8 tensor, see the
same image, and val/test need no work but normalisation.

- `memory`: an (N, 3, H, W) uint8 tensor, decoded at start-up (the last one is kept for the next run
  in the same process, e.g. the jobs of an in-process sweep).
- `disk`: the same array in `<cache_dir>/pixels-<fingerprint>.npy`, decoded once and memory-mapped
  afterwards by the run and its DataLoader workers alike (the OS page cache shares it). The fingerprint
  covers every file's path, size and mtime plus the geometry, so a changed folder gets a new file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import v2

from lightning_resnet.data.cache import fingerprint
from lightning_resnet.data.images import load_rgb
from lightning_resnet.data.transforms import resize_ops
from lightning_resnet.errors import ConfigError

log = logging.getLogger(__name__)

CACHE_MODES = (None, "memory", "disk")
DECODERS = ("cpu", "cuda")
FORMAT_VERSION = "pixels-v1"  # part of the fingerprint: bump when the stored pixels change meaning
JPEG_SUFFIXES = (".jpg", ".jpeg")
EXIF_ORIENTATION = 0x0112

_last_in_memory: dict[str, torch.Tensor] = {}  # fingerprint -> pixels of the last `memory` cache built


def check_cache_options(cache: str | None, decode: str) -> None:
    if cache not in CACHE_MODES:
        raise ConfigError(f"data.cache={cache!r}; valid: null, memory, disk")
    if decode not in DECODERS:
        raise ConfigError(f"data.cache_decode={decode!r}; valid: {', '.join(DECODERS)}")
    if decode == "cuda" and not torch.cuda.is_available():
        raise ConfigError("data.cache_decode=cuda needs a CUDA GPU (none is visible); use cpu")


def decode_resized(path: str | Path, size: int, crop_ratio: float | None = None) -> torch.Tensor:
    """(3, size, size) uint8: `load_rgb` then the PIL path's own resize (and centre crop)."""
    image = v2.Compose(resize_ops(size, crop_ratio))(load_rgb(path))
    return v2.functional.pil_to_tensor(image)


def decode_resized_jpegs(
    paths: Sequence[str | Path], size: int, crop_ratio: float | None = None, device: str = "cuda"
) -> torch.Tensor:
    """(len(paths), 3, size, size) uint8 on the CPU; on `cuda`, JPEGs decoded by nvJPEG and resized on the GPU.

    Pixels differ slightly from the PIL path (another decoder and a tensor resize), which is why the
    decoder is part of the cache's fingerprint. What nvJPEG cannot do goes through PIL: other formats,
    EXIF-rotated JPEGs (nvJPEG ignores the orientation), and a batch with a file it fails on.
    """
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    resize = v2.Compose(resize_ops(size, crop_ratio))
    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    jpegs = [i for i, p in enumerate(paths) if str(p).lower().endswith(JPEG_SUFFIXES) and _upright(p)]
    decoded: dict[int, torch.Tensor] = {}
    if jpegs:
        try:
            images = decode_jpeg([read_file(str(paths[i])) for i in jpegs], mode=ImageReadMode.RGB, device=device)
            decoded = {i: resize(image).cpu() for i, image in zip(jpegs, images, strict=True)}
        except RuntimeError as err:  # one undecodable file fails the batch: fall back to PIL for all
            log.debug("nvJPEG failed on a batch (%s); decoding it with PIL", err)
    for i, path in enumerate(paths):
        out[i] = decoded[i] if i in decoded else decode_resized(path, size, crop_ratio)
    return out


def _upright(path: str | Path) -> bool:
    """No EXIF rotation to apply (reads the header only)."""
    try:
        with Image.open(path) as image:
            return image.getexif().get(EXIF_ORIENTATION, 1) == 1
    except (OSError, ValueError):
        return False  # let PIL's full decode report it


def _fill(
    out: np.ndarray | torch.Tensor,
    paths: Sequence[str],
    size: int,
    crop_ratio: float | None,
    threads: int,
    decode: str,
) -> None:
    """Decode every path into its row of `out`: PIL in `threads` threads (it releases the GIL), or nvJPEG."""
    target = torch.from_numpy(out) if isinstance(out, np.ndarray) else out
    if decode == "cuda":
        chunk = 64
        for start in range(0, len(paths), chunk):
            target[start : start + chunk] = decode_resized_jpegs(paths[start : start + chunk], size, crop_ratio)
        return

    def one(index: int) -> None:
        target[index] = decode_resized(paths[index], size, crop_ratio)

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        list(pool.map(one, range(len(paths))))


class PixelFile:
    """A (N, 3, H, W) uint8 `.npy` file, memory-mapped on first use in each process.

    Pickling (DataLoader workers under spawn/forkserver) sends the path only; each worker maps the
    file itself, so no process copies the pixels.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._array: np.ndarray | None = None

    @property
    def array(self) -> np.ndarray:
        """The mapping: copy-on-write, so writable as `torch.from_numpy` wants, and never written back."""
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="c")
        return self._array

    def __getitem__(self, index: Any) -> torch.Tensor:
        return torch.from_numpy(self.array[index.numpy() if isinstance(index, torch.Tensor) else index])

    def __len__(self) -> int:
        return len(self.array)

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_array": None}


Pixels = torch.Tensor | PixelFile


def build_pixels(
    paths: Sequence[str | Path],
    size: int,
    crop_ratio: float | None,
    mode: str,
    directory: Path,
    threads: int,
    decode: str = "cpu",
) -> tuple[Pixels, dict[str, int]]:
    """The pixels of `paths` for cache `mode` (decoding only what is not cached yet), and each path's row.

    Rows follow the sorted file names, so any split of the same files (seeds, folds) shares one cache.
    """
    paths = sorted({str(p) for p in paths})
    rows = {path: row for row, path in enumerate(paths)}
    return _pixels(paths, size, crop_ratio, mode, directory, threads, decode), rows


def _pixels(
    paths: list[str], size: int, crop_ratio: float | None, mode: str, directory: Path, threads: int, decode: str
) -> Pixels:
    key = fingerprint(paths, size, crop_ratio, decode, FORMAT_VERSION)
    shape = (len(paths), 3, size, size)
    if mode == "memory":
        if key not in _last_in_memory:
            log.info("data.cache=memory: decoding %d images at %d px (%.2f GB)", len(paths), size, _gb(shape))
            pixels = torch.empty(shape, dtype=torch.uint8)
            _fill(pixels, paths, size, crop_ratio, threads, decode)
            _last_in_memory.clear()
            _last_in_memory[key] = pixels
        return _last_in_memory[key]
    path = directory / f"pixels-{key}.npy"
    if not path.is_file():
        try:
            _write_npy(path, paths, shape, crop_ratio, threads, decode)
        except OSError as err:
            log.warning("cannot write the pixel cache in %s (%s): keeping it in memory this run", directory, err)
            return _pixels(paths, size, crop_ratio, "memory", directory, threads, decode)
    log.info("data.cache=disk: %d images memory-mapped from %s", len(paths), path)
    return PixelFile(path)


def _write_npy(
    path: Path, paths: list[str], shape: tuple[int, ...], crop_ratio: float | None, threads: int, decode: str
) -> None:
    """Decode into a temporary memory-mapped .npy beside `path`, then rename it (parallel jobs may race)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    log.info("data.cache=disk: decoding %d images once into %s (%.2f GB)", len(paths), path, _gb(shape))
    temporary = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
    try:
        array = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.uint8, shape=shape)
        _fill(array, paths, shape[-1], crop_ratio, threads, decode)
        array.flush()
        del array
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _gb(shape: tuple[int, ...]) -> float:
    return float(np.prod(shape)) / 1e9


class CachedImageDataset(Dataset):
    """(image, label) from cached pixels: `transform` gets a (3, H, W) uint8 tensor already at the training size.

    `paths` and `labels` stay inspectable as on `ImageFileDataset`; `rows` index `pixels`.
    """

    resized = True  # the data module leaves the resize out of this dataset's transforms

    def __init__(
        self,
        pixels: Pixels,
        rows: Sequence[int],
        paths: Sequence[Path],
        labels: Sequence[int],
        transform: Callable | None = None,
    ) -> None:
        self.pixels, self.rows = pixels, list(rows)
        self.paths, self.labels, self.transform = list(paths), list(labels), transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = self.pixels[self.rows[index]]
        return (self.transform(image) if self.transform else image), self.labels[index]
