"""Input pipeline: images/s of the DataModule's train loader alone, against the peer pipeline and the model.

Real JPEGs at typical sizes (300-500 px a side, quality 90) are written into a temporary folder. On
the same folder, side by side in this process, each pipeline decodes, augments (horizontal flip)
and collates batches of 224 px images for 0, 1 and N workers:

- ours, the decoded path (`data.cache=null`), the pixel cache in memory and on disk (`data.cache=...`);
  our loaders ship uint8 batches, so each timed batch also gets what the consumer does after the
  transfer (`on_after_batch_transfer`: float conversion and normalisation, here on the CPU), and the
  loader figures compare like with like: a normalised float batch ready for the model;
- the peer pipeline of the studies and torchvision's reference script: `torchvision.datasets.ImageFolder`
  + PIL `RandomResizedCrop`, `RandomHorizontalFlip`, `ToTensor`, `Normalize` in a `DataLoader`;
- timm's `create_loader`, when timm is installed.

Each loader runs one warm-up epoch (worker start-up, page cache), then timed epochs (at least `min_seconds`).
The ratio issue 17 sets a target for is per worker: the images a worker makes per CPU second of its own
(`WorkerClock`: fetch and collate, the batch in shared memory) with the cache over the decoded path. That
figure hides what the loader's images/s shows: the hand-off of each batch to the main process and the
normalisation there, which on this CPU-only machine share the cores with the workers (on a GPU the
normalisation runs on the device). The batched augmentation (`data.batch_augment`) is timed against v2's
per-image loop on the same uint8 batch, on tensors and on PIL images (the keras_yoga ops: affine, flip,
colour jitter). The model's training step rate at the same size on this machine's device says whether the
loader is the bottleneck. (JPEG decoding at realistic photo sizes against the peers is `benchmarks/decode.py`.)
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, get_worker_info
from torchvision import datasets
from torchvision import transforms as T
from torchvision.transforms import v2

from benchmarks.common import Row
from benchmarks.overhead import PlainLoop
from lightning_resnet.data import ImageFolderDataModule
from lightning_resnet.data.batch_augment import BatchAugment
from lightning_resnet.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Batch, collate
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


class WorkerClock(Dataset):
    """A training dataset that adds up the CPU time its DataLoader workers (or, with 0 workers, the main
    process) spend making batches, fetch and collate, in a shared table: the per-worker cost, which the
    loader's own images/s hides behind the hand-off to the main process and the normalisation there."""

    def __init__(self, dataset: Dataset, collate_fn: Callable, workers: int) -> None:
        self.dataset, self.collate_fn = dataset, collate_fn
        self.totals = torch.zeros(max(1, workers), 2, dtype=torch.float64).share_memory_()  # (CPU s, images)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitems__(self, indices: list[int]) -> Batch:
        started = time.thread_time()
        getitems = getattr(self.dataset, "__getitems__", None)
        images, labels = self.collate_fn(getitems(indices) if getitems else [self.dataset[i] for i in indices])
        worker = get_worker_info()
        self.totals[worker.id if worker else 0] += torch.tensor([time.thread_time() - started, len(indices)])
        return Batch(images, labels)

    def rate(self) -> float:
        """Images per CPU second of one worker."""
        seconds, images = self.totals.sum(0).tolist()
        return images / seconds

    @classmethod
    def around(cls, loader: DataLoader) -> tuple[DataLoader, WorkerClock]:
        """The same loader (sampler, collate, workers) over this clock around its dataset."""
        clock = cls(loader.dataset, loader.collate_fn, loader.num_workers)
        timed = DataLoader(
            clock, batch_size=loader.batch_size, sampler=loader.sampler, collate_fn=collate,
            num_workers=loader.num_workers, persistent_workers=loader.persistent_workers,
        )  # fmt: skip
        return timed, clock


def loader_rate(loader: Iterable, finish: Callable[[Any], Any] | None = None, min_seconds: float = 1.0) -> float:
    """Images/s over whole epochs (at least `min_seconds` of them), after one warm-up epoch; `finish`: what
    the consumer does to each batch after the transfer (our loaders' normalisation), timed with it."""
    finish = finish or (lambda batch: batch)
    for batch in loader:
        finish(batch)
    if isinstance(loader, DataLoader) and isinstance(loader.dataset, WorkerClock):
        loader.dataset.totals.zero_()  # the warm-up epoch's worker time does not count either
    images, started = 0, time.perf_counter()
    while images == 0 or time.perf_counter() - started < min_seconds:
        for batch in loader:
            images += len(finish(batch)[0])
    return images / (time.perf_counter() - started)


def augment_rates(ops: list[Any], size: int, batch: int, repeats: int = 3) -> dict[str, float]:
    """Images/s of `ops` over a uint8 batch: batched (`BatchAugment`, one call, rounded back to uint8 as in
    a worker), v2 image by image on uint8 tensors, and v2 image by image on PIL images (what the decoded
    path's workers do)."""
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
    pil = [v2.functional.to_pil_image(image) for image in images]
    batched, per_image = BatchAugment(ops), v2.Compose(ops)

    def rate(fn: Callable[[], Any]) -> float:
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
        return batch / statistics.median(times)

    return {
        "batched": rate(lambda: batched(images)),
        "tensor": rate(lambda: torch.stack([per_image(image) for image in images])),
        "pil": rate(lambda: torch.stack([v2.functional.pil_to_tensor(per_image(image)) for image in pil])),
    }


def ours(
    root: Path, cache_dir: Path, cache: str | None, workers: int, size: int, batch: int
) -> tuple[DataLoader, Callable[[Any], Any]]:
    """Our train loader and what follows its batches after the transfer (normalisation, on the CPU here)."""
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
    return dm.train_dataloader(), lambda b: dm.model_input(b, train=True)


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


YOGA_OPS = [  # conf/augment/keras_yoga.yaml
    v2.RandomAffine(degrees=30, translate=[0.2, 0.2], scale=[0.9, 1.1], shear=0.15),
    v2.RandomHorizontalFlip(p=0.5),
    v2.ColorJitter(brightness=[0.2, 1.0]),
]


def run(
    images: int = 320, size: int = 224, batch: int = 32, model_steps: int = 3, min_seconds: float = 1.0
) -> list[Row]:
    rows: list[Row] = []
    many = available_cpus()
    counts = sorted({0, 1, many})  # 0: the main process alone, the cleanest per-process figure
    with tempfile.TemporaryDirectory() as tmp:
        root, cache_dir = write_jpegs(Path(tmp) / "images", images), Path(tmp) / "cache"
        setting = f"{images} JPEGs 300-500 px -> {size} px, flip, batch {batch}, normalised after the transfer"
        rates: dict[tuple[str, int], float] = {}
        per_worker: dict[tuple[str, int], float] = {}
        for cache in (None, "memory", "disk"):
            started = time.perf_counter()
            ours(root, cache_dir, cache, 0, size, batch)  # builds the cache (and the verification) once
            if cache:
                rows.append(Row("pipeline", f"cache={cache}: first set-up", time.perf_counter() - started, "s"))
            for workers in counts:
                loader, finish = ours(root, cache_dir, cache, workers, size, batch)
                timed, clock = WorkerClock.around(loader)
                rates[(str(cache), workers)] = rate = loader_rate(timed, finish, min_seconds=min_seconds)
                per_worker[(str(cache), workers)] = clock.rate()
                rows += [
                    Row("pipeline", f"ours, cache={cache}, {workers} workers", rate, "img/s", setting),
                    Row("pipeline", f"ours, cache={cache}, {workers} workers, per worker", clock.rate(), "img/s",
                        "images per CPU second of a worker (fetch + collate; 0 workers: the main process)"),
                ]  # fmt: skip
                setting = ""
        for workers in counts:
            rate = loader_rate(peer(root, workers, size, batch), min_seconds=min_seconds)
            rates[("peer", workers)] = rate
            rows.append(Row("pipeline", f"torchvision ImageFolder + PIL, {workers} workers", rate, "img/s", "peer"))
            timm = timm_loader(root, workers, size, batch)
            if timm is not None:
                note = "peer: timm's training defaults (random resized crop, flip, colour jitter)"
                rate = loader_rate(timm, min_seconds=min_seconds)
                rows.append(Row("pipeline", f"timm create_loader, {workers} workers", rate, "img/s", note))
    if "timm" not in " ".join(r.name for r in rows):
        rows.append(Row("pipeline", "timm create_loader", "skipped", "", "pip install -e '.[bench]'"))
    for workers in counts:
        for cache in ("memory", "disk"):
            ratio = per_worker[(cache, workers)] / per_worker[("None", workers)]
            loader = rates[(cache, workers)] / rates[("None", workers)]
            name = f"ratio cache={cache} / decoded path per worker, {workers} workers"
            rows.append(Row("pipeline", name, ratio, "", f"target >= 10 (issue 17); whole loader {loader:.1f}"))
    ours_vs_peer = rates[("None", many)] / rates[("peer", many)]
    note = "the peer crops before resizing (RandomResizedCrop), ours resizes the whole image"
    rows.append(Row("pipeline", f"ratio ours decoded path / peer, {many} workers", ours_vs_peer, "", note))
    augment = augment_rates(YOGA_OPS, size, batch)
    note = f"keras_yoga ops (affine, flip, jitter) on a uint8 batch of {batch} at {size} px, one CPU process"
    rows += [
        Row("pipeline", "augment, batched (BatchAugment, one call)", augment["batched"], "img/s", note),
        Row("pipeline", "augment, v2 image by image, uint8 tensors", augment["tensor"], "img/s", ""),
        Row("pipeline", "augment, v2 image by image, PIL images", augment["pil"], "img/s", "the decoded path's way"),
        Row("pipeline", "ratio augment batched / v2 on tensors", augment["batched"] / augment["tensor"], "", ""),
        Row("pipeline", "ratio augment batched / v2 on PIL", augment["batched"] / augment["pil"], "", ""),
    ]
    step, note = model_rate(size, batch, model_steps)
    rows.append(Row("pipeline", f"model training step at {size} px", step, "img/s", note))
    best = max(rates[(c, many)] for c in ("None", "memory", "disk"))
    verdict = "the loader keeps up" if best >= step else "the loader is the bottleneck"
    rows.append(Row("pipeline", "ratio best loader / model step", best / step, "", verdict))
    return rows
