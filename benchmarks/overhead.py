"""Framework overhead: images/s of `ResNetClassifier` under `Trainer.fit` vs a plain PyTorch loop.

Both use the same model class, batch, optimizer and the digits data module's train loader (in
memory), alternate in one process so machine noise hits both, and time the same step window
(after warm-up steps) from inside the loop. Lightning runs as users run it: progress bar,
epoch-level logging and torchmetrics on.
"""

from __future__ import annotations

import statistics
import time

import pytorch_lightning as pl
import torch
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
    return (len(ends) - 1 - warmup) * batch_size / (ends[-1] - ends[warmup])


def _model(arch: str) -> ResNetClassifier:
    return ResNetClassifier(arch=arch, num_classes=10, optimizer=lambda params: torch.optim.SGD(params, lr=0.01))


def lightning_rate(loader: DataLoader, arch: str, steps: int, warmup: int) -> float:
    timer = StepTimer()
    trainer = pl.Trainer(
        accelerator="auto",
        devices=1,
        max_epochs=1,
        limit_train_batches=steps,
        limit_val_batches=0,
        callbacks=[timer, pl.callbacks.TQDMProgressBar(refresh_rate=10)],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
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


def run(arch: str = "resnet18", batch_size: int = 64, steps: int = 19, warmup: int = 3, repeats: int = 3) -> list[Row]:
    dm = DigitsDataModule(image_size=32, batch_size=batch_size, num_workers=0)
    dm.setup("fit")
    loader = dm.train_dataloader()
    steps = min(steps, len(loader))
    plain, light = [], []
    for _ in range(repeats):  # alternate so drift and noise affect both sides alike
        plain.append(plain_rate(loader, arch, steps, warmup))
        light.append(lightning_rate(loader, arch, steps, warmup))
    p, lt = statistics.median(plain), statistics.median(light)
    setting = f"{arch}, digits 32 px, batch {batch_size}, {steps - warmup - 1} timed steps, median of {repeats}"
    return [
        Row("overhead", "plain PyTorch loop", p, "img/s", setting),
        Row("overhead", "Lightning Trainer.fit", lt, "img/s", "progress bar, logging, torchmetrics on"),
        Row("overhead", "ratio Lightning / plain", lt / p, "", "target >= 0.97"),
    ]
