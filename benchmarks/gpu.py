"""GPU training throughput: ResNet-50 at 224 px, batch 256, under `Trainer.fit`, per speed setting.

Settings: fp32 (convolutions in TF32, PyTorch's default), bf16-mixed, bf16-mixed + channels_last,
and + torch.compile. Synthetic batches already on the GPU give each setting's ceiling; real JPEGs
through the DataModule (the PIL path, and the pixel cache with augmentation on the GPU) show how much
of it the input pipeline keeps. Peak GPU memory per run. Only on a CUDA machine; elsewhere one row
says the section was skipped.
"""

from __future__ import annotations

import itertools
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from benchmarks.common import Row
from benchmarks.pipeline import write_jpegs
from lightning_resnet.data import ImageFolderDataModule
from lightning_resnet.models import ResNetClassifier

# NVIDIA's published per-GPU ResNet-50 v1.5 training throughput in PyTorch: NVIDIA DeepLearningExamples,
# PyTorch/Classification/ConvNets/resnet50v1.5/README.md, "Training performance: NVIDIA DGX A100 (8x A100
# 80GB)", 1 GPU, batch 256, pytorch-21.03 NGC container with DALI. No NVIDIA-published single-GPU
# PyTorch figure for the H100/H200 was found (their H100 results are MLPerf times-to-train on 8+ GPUs).
NVIDIA_A100 = {"mixed precision": 2470.0, "TF32": 938.0}

SETTINGS: dict[str, dict[str, Any]] = {
    "fp32 (TF32 convolutions)": {"precision": "32-true"},
    "bf16-mixed": {"precision": "bf16-mixed"},
    "bf16-mixed + channels_last": {"precision": "bf16-mixed", "channels_last": True},
    "bf16-mixed + channels_last + compile": {"precision": "bf16-mixed", "channels_last": True, "compile": True},
}
BEST_EAGER = "bf16-mixed + channels_last"


class StepTimer(pl.Callback):
    """perf_counter at the end of every training batch."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_train_batch_end(self, *args: object) -> None:
        self.ends.append(time.perf_counter())


def median_rate(ends: list[float], warmup: int, batch_size: int) -> float:
    """Images/s at the median interval between step ends, after `warmup` steps (robust to load bursts)."""
    intervals = [later - earlier for earlier, later in itertools.pairwise(ends[warmup:])]
    return batch_size / statistics.median(intervals)


def fit_rate(
    setting: dict[str, Any],
    steps: int,
    warmup: int,
    batch: int,
    arch: str,
    num_classes: int,
    accelerator: str,
    loader: DataLoader | None = None,
    datamodule: pl.LightningDataModule | None = None,
) -> tuple[float, float | None]:
    """(images/s at the median step, peak GPU memory in GiB) of `steps` training steps."""
    model = ResNetClassifier(
        arch=arch,
        num_classes=num_classes,
        channels_last=setting.get("channels_last", False),
        compile=setting.get("compile", False),
        optimizer=partial(torch.optim.SGD, lr=0.1, momentum=0.9),
    )
    timer = StepTimer()
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=setting["precision"],
        max_epochs=1,
        limit_train_batches=steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[timer],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    cuda = accelerator == "gpu"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(model, train_dataloaders=loader, datamodule=datamodule)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    return median_rate(timer.ends, warmup, batch), peak


def synthetic_loader(steps: int, batch: int, size: int, num_classes: int, device: str) -> DataLoader:
    """The same normalised-looking batch, already on the device, `steps` times: no input pipeline at all."""
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, num_classes, (batch,), device=device)
    return DataLoader([(x, y)] * steps, batch_size=None)


def jpeg_datamodule(root: Path, cache: str | None, batch: int, size: int) -> ImageFolderDataModule:
    dm = ImageFolderDataModule(
        root=root,
        image_size=size,
        batch_size=batch,
        augment=[v2.RandomHorizontalFlip()],
        cache=cache,
        cache_dir=root.parent / "cache",
        augment_on="auto",  # gpu under a CUDA trainer: uint8 batches, flip + normalise on the device
    )
    dm.setup("fit")
    return dm


def _memory(peak: float | None) -> str:
    return f"peak GPU memory {peak:.1f} GiB" if peak is not None else ""


def run(
    steps: int = 30,
    warmup: int = 5,
    batch: int = 256,
    size: int = 224,
    arch: str = "resnet50",
    jpegs: int = 0,
    compile: bool = True,
    accelerator: str | None = None,
) -> list[Row]:
    """`jpegs`: real images written for the loader runs (0: enough for `steps` batches)."""
    if accelerator is None:
        if not torch.cuda.is_available():
            return [Row("gpu", f"{arch} training on a GPU", "skipped", "", "no CUDA device on this machine")]
        accelerator = "gpu"
    device = "cuda" if accelerator == "gpu" else "cpu"
    num_classes = 1000
    rows: list[Row] = []
    ceiling: dict[str, float] = {}
    for name, setting in SETTINGS.items():
        if setting.get("compile") and not compile:
            rows.append(Row("gpu", f"synthetic, {name}", "skipped", "", "compile off (--quick)"))
            continue
        loader = synthetic_loader(steps, batch, size, num_classes, device)
        rate, peak = fit_rate(setting, steps, warmup, batch, arch, num_classes, accelerator, loader=loader)
        ceiling[name] = rate
        rows.append(Row("gpu", f"synthetic, {name}", rate, "img/s", _memory(peak)))

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        write_jpegs(root / "train", jpegs or steps * batch)
        write_jpegs(root / "val", 16, seed=1)
        real = [(None, BEST_EAGER), ("memory", BEST_EAGER)]
        if compile:
            real.append(("memory", "bf16-mixed + channels_last + compile"))
        for cache, name in real:
            dm = jpeg_datamodule(root, cache, batch, size)
            n = min(steps, len(dm.train_dataloader()))
            rate, peak = fit_rate(SETTINGS[name], n, warmup, batch, arch, dm.num_classes, accelerator, datamodule=dm)
            share = f"{rate / ceiling[name]:.0%} of synthetic" if name in ceiling else ""
            label = f"real JPEGs, cache={cache}, {dm.num_workers} workers, {name}"
            rows.append(Row("gpu", label, rate, "img/s", "; ".join(filter(None, [share, _memory(peak)]))))

    best = max(ceiling.values())
    for precision, figure in NVIDIA_A100.items():
        rows.append(Row("gpu", f"NVIDIA published, 1x A100 80GB, {precision}", figure, "img/s", "DeepLearningExamples"))
    rows.append(
        Row("gpu", "ratio best synthetic / NVIDIA A100 mixed", best / NVIDIA_A100["mixed precision"], "", "other GPU")
    )
    return rows
