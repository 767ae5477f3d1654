"""The pre-resized pixel cache (`data.cache`): every image decoded once to uint8 at the training size.

Decoding and resizing a JPEG costs milliseconds; reading its resized pixels from memory costs
microseconds. The cache holds the images exactly as the decoded path has them after its resize (same
`load_rgb`, same `resize_ops`), so the training augment ops see the same image either way, and val/test
need no work but normalisation.

- `memory`: an (N, 3, H, W) uint8 tensor, decoded at start-up (the last one is kept for the next run
  in the same process, e.g. the jobs of an in-process sweep).
- `disk`: the same array in `<cache_dir>/pixels-<fingerprint>.npy`, decoded once and memory-mapped
  afterwards by the run and its DataLoader workers alike (the OS page cache shares it). The fingerprint
  covers every file's path, size and mtime plus the geometry, so a changed folder gets a new file.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from lightning_resnet.data.cache import exclusive, fingerprint
from lightning_resnet.data.images import DEFAULT_MAX_PIXELS, EXIF_ORIENTATION, draft_side, load_rgb
from lightning_resnet.data.transforms import resize_ops
from lightning_resnet.errors import ConfigError

log = logging.getLogger(__name__)

CACHE_MODES = (None, "memory", "disk")
DECODERS = ("cpu", "cuda")
# in the fingerprint: bump when the stored pixels change meaning (v2: 16-bit scale, v3: JPEGs over
# 16.8 MP decoded at reduced scale, v4: every JPEG at least twice the target side, see images.DRAFT_FACTOR;
# v5: resized as a uint8 tensor, not a PIL image, see transforms.resize_ops)
FORMAT_VERSION = "pixels-v5"
FILL_CHUNK = 64  # images a decoding thread takes at a time
JPEG_SUFFIXES = (".jpg", ".jpeg")

_last_in_memory: dict[str, torch.Tensor] = {}  # fingerprint -> pixels of the last `memory` cache built


def check_cache_options(cache: str | None, decode: str) -> None:
    if cache not in CACHE_MODES:
        raise ConfigError(f"data.cache={cache!r}; valid: null, memory, disk")
    if decode not in DECODERS:
        raise ConfigError(f"data.cache_decode={decode!r}; valid: {', '.join(DECODERS)}")
    if decode == "cuda" and not torch.cuda.is_available():
        raise ConfigError("data.cache_decode=cuda needs a CUDA GPU (none is visible); use cpu")


def decode_resized(
    path: str | Path,
    size: int,
    crop_ratio: float | None = None,
    intensity: str = "fixed",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> torch.Tensor:
    """(3, size, size) uint8: `load_rgb` (with the decoded path's `draft_size`) then its resize (and centre crop)."""
    image = load_rgb(path, intensity, max_pixels, draft_side(size, crop_ratio))
    return v2.Compose(resize_ops(size, crop_ratio))(image)


def decode_resized_jpegs(
    paths: Sequence[str | Path],
    size: int,
    crop_ratio: float | None = None,
    device: str = "cuda",
    intensity: str = "fixed",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> torch.Tensor:
    """(len(paths), 3, size, size) uint8 on the CPU; on `cuda`, JPEGs decoded by nvJPEG and resized on the GPU.

    Pixels differ slightly from the CPU path (another decoder, and no reduced-scale decode), which is why
    the decoder is part of the cache's fingerprint. What nvJPEG cannot do goes through PIL: other formats,
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
        out[i] = decoded[i] if i in decoded else decode_resized(path, size, crop_ratio, intensity, max_pixels)
    return out


def _upright(path: str | Path) -> bool:
    """No EXIF rotation to apply (reads the header only)."""
    try:
        with Image.open(path) as image:
            return image.getexif().get(EXIF_ORIENTATION, 1) == 1
    except (OSError, ValueError, Image.DecompressionBombError):
        return False  # let PIL's full decode report it


@dataclass(frozen=True)
class Decoding:
    """How the cache decodes: the training size and crop, the decoder, the 16-bit intensity mapping, and the
    pixel limit (not in the cache's fingerprint: it only decides which files are bad, and those are left out)."""

    size: int
    crop_ratio: float | None = None
    decoder: str = "cpu"
    intensity: str = "fixed"
    max_pixels: int | None = DEFAULT_MAX_PIXELS


def _fill(out: np.ndarray | torch.Tensor, paths: Sequence[str], how: Decoding, threads: int) -> None:
    """Decode every path into its row of `out`: PIL in `threads` threads (it releases the GIL while decoding
    and resizing), a chunk of rows per task (never one pending task per image: 1.28 M of them take a GB), or nvJPEG."""
    target = torch.from_numpy(out) if isinstance(out, np.ndarray) else out
    if how.decoder == "cuda":
        chunk = 64
        for start in range(0, len(paths), chunk):
            target[start : start + chunk] = decode_resized_jpegs(
                paths[start : start + chunk], how.size, how.crop_ratio, "cuda", how.intensity, how.max_pixels
            )
        return

    def rows(start: int) -> None:
        for index in range(start, min(start + FILL_CHUNK, len(paths))):
            target[index] = decode_resized(paths[index], how.size, how.crop_ratio, how.intensity, how.max_pixels)

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        list(pool.map(rows, range(0, len(paths), FILL_CHUNK)))


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

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    def __getitem__(self, index: Any) -> torch.Tensor:
        return torch.from_numpy(self.array[index.numpy() if isinstance(index, torch.Tensor) else index])

    def __len__(self) -> int:
        return len(self.array)

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_array": None}


Pixels = torch.Tensor | PixelFile


def build_pixels(
    paths: Sequence[str | Path],
    how: Decoding,
    mode: str,
    directory: Path,
    threads: int,
    within: str | None = None,
) -> tuple[Pixels, dict[str, int]]:
    """The pixels of `paths` for cache `mode` (decoding only what is not cached yet), and each path's row.

    Rows follow the sorted file names, so any split of the same files (seeds, folds) shares one cache.
    `within`: the fingerprint of a file list holding `paths` (see `cache.fingerprint`), to key the cache
    without a second stat of every file.
    """
    paths = sorted({str(p) for p in paths})
    rows = {path: row for row, path in enumerate(paths)}
    return _pixels(paths, how, mode, directory, threads, within), rows


def _pixels(
    paths: list[str], how: Decoding, mode: str, directory: Path, threads: int, within: str | None = None
) -> Pixels:
    """`memory`: decoded by this process (the last one kept). `disk`: decoded by one process holding the
    lock beside the file (`cache.exclusive`), memory-mapped by it and every process that waited for it."""
    extra = (how.size, how.crop_ratio, how.decoder, how.intensity, FORMAT_VERSION)
    key = fingerprint(paths, *extra, within=within, threads=threads)
    shape = (len(paths), 3, how.size, how.size)
    if mode == "memory":
        if key not in _last_in_memory:
            _check_room("memory", shape, _available_memory(), "RAM available", "data.cache=disk")
            log.info("data.cache=memory: decoding %s into RAM", _predicted(len(paths), how.size))
            pixels = torch.empty(shape, dtype=torch.uint8)
            _fill(pixels, paths, how, threads)
            _last_in_memory.clear()
            _last_in_memory[key] = pixels
        return _last_in_memory[key]
    path = directory / f"pixels-{key}.npy"
    if not path.is_file():
        try:
            with exclusive(path.with_suffix(".lock"), f"the pixel cache {path.name}"):
                if not path.is_file():  # else built while this process waited
                    _write_npy(path, paths, shape, how, threads)
        except OSError as err:
            log.warning("cannot write the pixel cache in %s (%s): keeping it in memory this run", directory, err)
            return _pixels(paths, how, "memory", directory, threads, within)
    log.info("data.cache=disk: %d images memory-mapped from %s", len(paths), path)
    return PixelFile(path)


def _write_npy(path: Path, paths: list[str], shape: tuple[int, ...], how: Decoding, threads: int) -> None:
    """Decode into a temporary memory-mapped .npy beside `path`, then rename it (a reader never sees half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _check_room("disk", shape, _free_disk(path.parent), f"free in {path.parent}", "data.cache_dir=<a larger disk>")
    log.info("data.cache=disk: decoding %s once into %s", _predicted(len(paths), how.size), path)
    temporary = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
    try:
        array = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.uint8, shape=shape)
        _fill(array, paths, how, threads)
        array.flush()
        del array
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _predicted(count: int, size: int) -> str:
    """The cache's size before it is built: N x 3 x H x W bytes."""
    gigabytes = _gb((count, 3, size, size))
    return f"{count:,} images at {size} px ({count:,} x 3 x {size} x {size} bytes = {gigabytes:.2f} GB)"


def _check_room(mode: str, shape: tuple[int, ...], available: int | None, where: str, instead: str) -> None:
    """A `ConfigError` before decoding a cache that cannot fit (ImageNet at 224 px is 193 GB), not hours later."""
    needed = int(np.prod(shape))
    if available is not None and needed > available:
        raise ConfigError(
            f"data.cache={mode}: {_predicted(shape[0], shape[-1])} do not fit: {available / 1e9:.2f} GB {where}. "
            f"Use {instead}, a smaller data.image_size, or data.cache=null (decode every epoch)"
        )


def _free_disk(directory: Path) -> int | None:
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


def _available_memory() -> int | None:
    """MemAvailable (Linux), or None where unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _gb(shape: tuple[int, ...]) -> float:
    return float(np.prod(shape)) / 1e9
