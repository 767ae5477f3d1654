"""Input pipeline: images/s of the DataModule's train loader alone, against the peer pipeline and the model.

Real JPEGs at typical sizes (300-500 px a side, quality 90) are written into a temporary folder. On
the same folder, side by side in this process, each pipeline decodes, augments (horizontal flip)
and collates batches of 224 px images for 1 and N workers:

- ours, the PIL path (`data.cache=null`), the pixel cache in memory and on disk (`data.cache=...`);
- the peer pipeline of the studies and torchvision's reference script: `torchvision.datasets.ImageFolder`
  + PIL `RandomResizedCrop`, `RandomHorizontalFlip`, `ToTensor`, `Normalize` in a `DataLoader`;
- timm's `create_loader`, when timm is installed.

Each loader runs one warm-up epoch (worker start-up, page cache) and one timed epoch. The model's
training step rate at the same size on this machine's device says whether the loader is the bottleneck.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision import transforms as T
from torchvision.transforms import v2

from benchmarks.common import Row
from benchmarks.overhead import PlainLoop
from lightning_resnet.data import ImageFolderDataModule
from lightning_resnet.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from lightning_resnet.utils import available_cpus

CLASSES = ("a", "b")


def write_jpegs(folder: Path, count: int, seed: int = 0) -> Path:
    """`count` photo-like JPEGs (smooth colour fields plus noise, so they compress like photos) in class folders."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        width, height = (int(v) for v in rng.integers(300, 501, size=2))
        coarse = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
        noisy = np.asarray(image, dtype=np.int16) + rng.integers(-20, 21, size=(height, width, 3))
        path = folder / CLASSES[i % len(CLASSES)] / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(path, quality=90)
    return folder


def loader_rate(loader: Iterable) -> float:
    """Images/s of one epoch, after one warm-up epoch."""
    for _ in loader:
        pass
    images, started = 0, time.perf_counter()
    for batch in loader:
        images += len(batch[0])
    return images / (time.perf_counter() - started)


def ours(root: Path, cache_dir: Path, cache: str | None, workers: int, size: int, batch: int) -> DataLoader:
    dm = ImageFolderDataModule(
        root=root,
        layout="classes",
        fractions=[0.9, 0.1],
        image_size=size,
        batch_size=batch,
        augment=[v2.RandomHorizontalFlip()],
        num_workers=workers,
        cache=cache,
        cache_dir=cache_dir,
        augment_on="cpu",
    )
    dm.setup("fit")
    return dm.train_dataloader()


def peer(root: Path, workers: int, size: int, batch: int) -> DataLoader:
    """torchvision's reference training pipeline (references/classification), PIL throughout."""
    transform = T.Compose(
        [
            T.RandomResizedCrop(size),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    return DataLoader(
        datasets.ImageFolder(str(root), transform),
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
    )


def timm_loader(root: Path, workers: int, size: int, batch: int) -> Iterable | None:
    try:
        from timm.data import ImageDataset, create_loader
    except ImportError:
        return None
    return create_loader(
        ImageDataset(str(root)),
        input_size=(3, size, size),
        batch_size=batch,
        is_training=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        # timm's prefetcher normalises on the GPU with CUDA streams; without CUDA the workers do it
        use_prefetcher=torch.cuda.is_available(),
        device=torch.device("cuda" if torch.cuda.is_available() else "cpu"),
    )


def model_rate(size: int, batch: int, steps: int, arch: str = "resnet18") -> tuple[float, str]:
    """Training images/s of the model alone (synthetic batches already on the device): the loader's target."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, len(CLASSES), (batch,), device=device)
    plain = PlainLoop([(x, y)], arch, device)
    times = []
    for _ in range(steps + 1):  # the first is a warm-up
        started = time.perf_counter()
        plain.step()
        times.append(time.perf_counter() - started)
    return batch / statistics.median(times[1:]), f"{arch}, batch {batch}, {device.type}"


def run(images: int = 320, size: int = 224, batch: int = 32, model_steps: int = 3) -> list[Row]:
    rows: list[Row] = []
    many = available_cpus()
    counts = sorted({1, many})
    with tempfile.TemporaryDirectory() as tmp:
        root, cache_dir = write_jpegs(Path(tmp) / "images", images), Path(tmp) / "cache"
        setting = f"{images} JPEGs 300-500 px -> {size} px, flip, batch {batch}"
        rates: dict[tuple[str, int], float] = {}
        for cache in (None, "memory", "disk"):
            started = time.perf_counter()
            ours(root, cache_dir, cache, 0, size, batch)  # builds the cache (and the verification) once
            if cache:
                rows.append(Row("pipeline", f"cache={cache}: first set-up", time.perf_counter() - started, "s"))
            for workers in counts:
                rate = loader_rate(ours(root, cache_dir, cache, workers, size, batch))
                rates[(str(cache), workers)] = rate
                rows.append(Row("pipeline", f"ours, cache={cache}, {workers} workers", rate, "img/s", setting))
                setting = ""
        for workers in counts:
            rate = loader_rate(peer(root, workers, size, batch))
            rates[("peer", workers)] = rate
            rows.append(Row("pipeline", f"torchvision ImageFolder + PIL, {workers} workers", rate, "img/s", "peer"))
            timm = timm_loader(root, workers, size, batch)
            if timm is not None:
                note = "peer: timm's training defaults (random resized crop, flip, colour jitter)"
                rows.append(Row("pipeline", f"timm create_loader, {workers} workers", loader_rate(timm), "img/s", note))
    if "timm" not in " ".join(r.name for r in rows):
        rows.append(Row("pipeline", "timm create_loader", "skipped", "", "pip install -e '.[bench]'"))
    for cache in ("memory", "disk"):
        ratio = rates[(cache, many)] / rates[("None", many)]
        rows.append(Row("pipeline", f"ratio cache={cache} / PIL path, {many} workers", ratio, "", "target >= 3"))
    ours_vs_peer = rates[("None", many)] / rates[("peer", many)]
    note = "the peer crops before resizing (RandomResizedCrop), ours resizes the whole image"
    rows.append(Row("pipeline", f"ratio ours PIL path / peer, {many} workers", ours_vs_peer, "", note))
    step, note = model_rate(size, batch, model_steps)
    rows.append(Row("pipeline", f"model training step at {size} px", step, "img/s", note))
    best = max(rates[(c, many)] for c in ("None", "memory", "disk"))
    verdict = "the loader keeps up" if best >= step else "the loader is the bottleneck"
    rows.append(Row("pipeline", "ratio best loader / model step", best / step, "", verdict))
    return rows
