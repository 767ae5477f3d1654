"""Decoded path: images/s of our decoded path (`data.cache=null`) against torchvision's `ImageFolder` + PIL.

Photo-like JPEGs at the sizes of the studies' data (500 x 375 and 1024 x 768, quality 90) are written
once into `~/.cache/lightning-resnet/bench/` and reused. On each set, for 0 and N workers, in turn
(ours, peer, peer, ours, ... one epoch each after a warm-up epoch, median of `repeats`):

- ours: the data module's training loader (`load_rgb`, a uint8 tensor resize to 224 px, a flip), and
  the normalisation of each batch in this process (`model_input`: on a GPU run it happens on the device);
- the peer of the studies and torchvision's reference script: `ImageFolder` + `RandomResizedCrop(224)`,
  flip, `ToTensor`, `Normalize` in the workers; and the same with `Resize((224, 224))`, our geometry.

Also measured: how far a reduced-scale JPEG decode (`images.DRAFT_FACTOR`) moves the training pixels
from a full decode's, in grey levels at 224 px. `python -m benchmarks.decode --profile` prints where one
image's time goes, ours against the peer (cProfile, in this process).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision import transforms as T
from torchvision.transforms import v2

from benchmarks.common import Row, format_table
from lightning_resnet.data import ImageFolderDataModule
from lightning_resnet.data.images import draft_side, load_rgb
from lightning_resnet.data.transforms import IMAGENET_MEAN, IMAGENET_STD, resize_ops
from lightning_resnet.utils import available_cpus

PHOTO_SIZES = ((500, 375), (1024, 768))
CLASSES = ("a", "b")
QUALITY = 90


def bench_cache() -> Path:
    """Where generated benchmark data is kept between runs (`$XDG_CACHE_HOME` or ~/.cache)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lightning-resnet" / "bench"


def photo(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Photo-like: colour fields at several scales (shapes, shading, texture) and fine grain, so the JPEG's
    size and decode work are a photo's (about 3.4 bits a pixel at quality 90, 78 KB at 500 x 375), not a
    flat field's or pure noise's."""
    scales = ((4, 1.0), (16, 0.5), (64, 0.35), (160, 0.25))  # (cells across, weight)
    total = np.zeros((height, width, 3), np.float32)
    for cells, weight in scales:
        coarse = rng.integers(0, 256, size=(max(2, cells * height // width), cells, 3), dtype=np.uint8)
        total += weight * np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))
    grain = rng.normal(0.0, 8.0, size=(height, width, 1))
    return Image.fromarray((total / sum(w for _, w in scales) + grain).clip(0, 255).astype(np.uint8))


def photo_folder(size: tuple[int, int], count: int, seed: int = 0) -> Path:
    """`count` photos of `size` in two class folders, written once (a `.complete` marker says it finished)."""
    folder = bench_cache() / f"photos-{size[0]}x{size[1]}-q{QUALITY}-{count}"
    if (folder / ".complete").is_file():
        return folder
    rng = np.random.default_rng(seed)
    for i in range(count):
        path = folder / CLASSES[i % len(CLASSES)] / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        photo(rng, *size).save(path, quality=QUALITY)
    (folder / ".complete").touch()
    return folder


def ours(root: Path, workers: int, size: int, batch: int) -> tuple[DataLoader, Callable]:
    """Our training loader on the decoded path, and what turns its batches into model input."""
    dm = ImageFolderDataModule(
        root=root, layout="classes", fractions=[0.9, 0.1], image_size=size, batch_size=batch,
        augment=[v2.RandomHorizontalFlip()], num_workers=workers, normalize="imagenet", cache=None,
        cache_dir=root.parent / f"{root.name}-state", augment_on="cpu", pin_memory=False,
    )  # fmt: skip
    dm.setup("fit")
    model_input = getattr(dm, "model_input", None)
    return dm.train_dataloader(), (lambda b: model_input(b, train=True)) if model_input else (lambda b: b)


def peer(root: Path, workers: int, size: int, batch: int, crop: bool = True) -> tuple[DataLoader, Callable]:
    """torchvision's reference training pipeline (references/classification), PIL throughout; `crop=False`:
    a plain resize to the square, our geometry."""
    geometry = T.RandomResizedCrop(size) if crop else T.Resize((size, size))
    transform = T.Compose([geometry, T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    loader = DataLoader(
        datasets.ImageFolder(str(root), transform), batch_size=batch, shuffle=True, num_workers=workers,
        persistent_workers=workers > 0,
    )  # fmt: skip
    return loader, lambda b: b


def epoch_rate(loader: Iterable, finish: Callable) -> float:
    images, started = 0, time.perf_counter()
    for batch in loader:
        images += len(finish(batch)[0])
    return images / (time.perf_counter() - started)


def compare(root: Path, workers: int, size: int, batch: int, repeats: int) -> dict[str, float]:
    """Median images/s of each loader, the loaders' epochs taken in turn (ours first, then reversed)."""
    loaders = {
        "ours": ours(root, workers, size, batch),
        "peer": peer(root, workers, size, batch),
        "peer_resize": peer(root, workers, size, batch, crop=False),
    }
    for loader, finish in loaders.values():  # warm-up: worker start-up, page cache
        epoch_rate(loader, finish)
    rates: dict[str, list[float]] = {name: [] for name in loaders}
    for index in range(repeats):
        names = list(loaders) if index % 2 == 0 else list(reversed(loaders))
        for name in names:
            rates[name].append(epoch_rate(*loaders[name]))
    return {name: statistics.median(values) for name, values in rates.items()}


def draft_difference(root: Path, size: int, limit: int = 64) -> tuple[float, float]:
    """(mean, max) |training pixels with the reduced-scale decode - with a full decode|, in grey levels."""
    resize = v2.Compose(resize_ops(size))
    means, peaks = [], []
    for path in sorted(root.glob("*/*.jpg"))[:limit]:
        drafted = resize(load_rgb(path, draft_size=draft_side(size))).int()
        full = resize(load_rgb(path)).int()
        difference = (drafted - full).abs().float()
        means.append(float(difference.mean()))
        peaks.append(float(difference.max()))
    return statistics.mean(means), max(peaks)


def run(images: int = 128, size: int = 224, batch: int = 32, repeats: int = 3) -> list[Row]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker: no OpenMP threads of this process spinning against them
    try:
        return _rows(images, size, batch, repeats)
    finally:
        torch.set_num_threads(threads)


def _rows(images: int, size: int, batch: int, repeats: int) -> list[Row]:
    rows: list[Row] = []
    counts = sorted({0, available_cpus()})
    for width, height in PHOTO_SIZES:
        root = photo_folder((width, height), images)
        kb = sum(p.stat().st_size for p in root.glob("*/*.jpg")) / images / 1e3
        where = f"{width}x{height}"
        note = f"{images} JPEGs {where} q{QUALITY} ({kb:.0f} KB avg) -> {size} px, flip, batch {batch}"
        for workers in counts:
            rates = compare(root, workers, size, batch, repeats)
            rows += [
                Row("decode", f"ours, decoded path, {where}, {workers} workers", rates["ours"], "img/s", note),
                Row("decode", f"torchvision ImageFolder + PIL, {where}, {workers} workers", rates["peer"], "img/s",
                    "peer: RandomResizedCrop(224) (crops before resizing)"),
                Row("decode", f"torchvision ImageFolder + PIL, Resize, {where}, {workers} workers",
                    rates["peer_resize"], "img/s", "peer with our geometry: Resize((224, 224))"),
                Row("decode", f"ratio ours / peer, {where}, {workers} workers", rates["ours"] / rates["peer"], "",
                    f"target >= 1.0; vs the Resize peer {rates['ours'] / rates['peer_resize']:.2f}"),
            ]  # fmt: skip
            note = ""
        if min(width, height) >= 2 * size:
            mean, peak = draft_difference(root, size)
            rows.append(Row("decode", f"reduced-scale decode vs full, {where} -> {size} px", mean, "grey levels",
                            f"mean |difference| per pixel (0-255); max {peak:.0f}"))  # fmt: skip
    return rows


def profile(images: int = 48, size: int = 224) -> None:
    """Where one image's time goes, ours against the peer, in this process with one torch thread (as in a
    DataLoader worker)."""
    torch.set_num_threads(1)
    for width, height in PHOTO_SIZES:
        root = photo_folder((width, height), 128)
        for name, (loader, _) in {"ours": ours(root, 0, size, 16), "peer": peer(root, 0, size, 16)}.items():
            dataset = loader.dataset
            dataset = getattr(dataset, "dataset", dataset)
            profiler = cProfile.Profile()
            started = time.perf_counter()
            profiler.enable()
            for index in range(images):
                dataset[index]
            profiler.disable()
            per_image = (time.perf_counter() - started) / images * 1e3
            print(f"\n=== {name}, {width}x{height}: {per_image:.2f} ms an image (profiled) ===")
            pstats.Stats(profiler).sort_stats("tottime").print_stats(14)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", action="store_true", help="profile one image's work instead")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.profile:
        profile()
        return
    print(format_table(run(repeats=args.repeats)))


if __name__ == "__main__":
    main()
