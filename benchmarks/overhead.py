"""Framework overhead: images/s of `ResNetClassifier` under `Trainer.fit` vs a plain PyTorch loop.

Both use the same model class, batch, optimizer and the digits data module's train loader (in
memory), and time every step from inside the loop (the interval between the ends of consecutive
steps: data, forward, backward, optimizer, and whatever the loop adds). Lightning runs as users run
it: progress bar, TensorBoard logging and torchmetrics on.

Robust to a shared machine: a step's rate is the batch over the *median* step interval (a burst of
another process's load lands in a few intervals, not in the median), the two sides alternate in
pairs (in alternating order, so drift hits both), and the ratio is the median of the pairs' ratios.
An earlier version divided each run's whole window by its step count and paired medians of
separate runs, so one noisy run moved the ratio by 10 % and more either way.
"""

from __future__ import annotations

import itertools
import statistics
import tempfile
import time

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from benchmarks.common import Row
from lightning_resnet.data import DigitsDataModule
from lightning_resnet.models import ResNetClassifier


class StepTimer(pl.Callback):
    """perf_counter at the end of every training batch."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_train_batch_end(self, *args: object) -> None:
        self.ends.append(time.perf_counter())


def _rate(ends: list[float], warmup: int, batch_size: int) -> float:
    """Images/s at the median interval between step ends, after `warmup` steps."""
    intervals = [later - earlier for earlier, later in itertools.pairwise(ends[warmup:])]
    return batch_size / statistics.median(intervals)


def _model(arch: str) -> ResNetClassifier:
    return ResNetClassifier(arch=arch, num_classes=10, optimizer=lambda params: torch.optim.SGD(params, lr=0.01))


def lightning_rate(loader: DataLoader, arch: str, steps: int, warmup: int) -> float:
    timer = StepTimer()
    logs = tempfile.TemporaryDirectory()
    trainer = pl.Trainer(
        accelerator="auto",
        devices=1,
        max_epochs=1,
        limit_train_batches=steps,
        limit_val_batches=0,
        callbacks=[timer, pl.callbacks.TQDMProgressBar(refresh_rate=10)],
        logger=TensorBoardLogger(logs.name),
        log_every_n_steps=10,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    with logs:
        trainer.fit(_model(arch), train_dataloaders=loader)
    return _rate(timer.ends, warmup, loader.batch_size)


def plain_rate(loader: DataLoader, arch: str, steps: int, warmup: int) -> float:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = _model(arch).to(device).train()
    optimizer = model.optimizer_factory(model.parameters())
    ends = []
    for step, (x, y) in enumerate(loader):
        if step == steps:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = model.loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()  # Lightning syncs on the loss each step too (progress bar, NaN check)
        ends.append(time.perf_counter())
    return _rate(ends, warmup, loader.batch_size)


def run(arch: str = "resnet18", batch_size: int = 64, steps: int = 19, warmup: int = 3, repeats: int = 8) -> list[Row]:
    dm = DigitsDataModule(image_size=32, batch_size=batch_size, num_workers=0)
    dm.setup("fit")
    loader = dm.train_dataloader()
    steps = min(steps, len(loader))
    plain, light, ratios = [], [], []
    for repeat in range(repeats):
        if repeat % 2:  # alternate the order too, so a trend in the machine's load favours neither side
            lt = lightning_rate(loader, arch, steps, warmup)
            p = plain_rate(loader, arch, steps, warmup)
        else:
            p = plain_rate(loader, arch, steps, warmup)
            lt = lightning_rate(loader, arch, steps, warmup)
        plain.append(p)
        light.append(lt)
        ratios.append(lt / p)
    setting = f"{arch}, digits 32 px, batch {batch_size}, median of {steps - warmup - 1} steps, {repeats} pairs"
    spread = f"pairs {min(ratios):.3f}-{max(ratios):.3f}; target >= 0.97"
    return [
        Row("overhead", "plain PyTorch loop", statistics.median(plain), "img/s", setting),
        Row("overhead", "Lightning Trainer.fit", statistics.median(light), "img/s", "progress bar, logs, metrics on"),
        Row("overhead", "ratio Lightning / plain", statistics.median(ratios), "", spread),
    ]
