"""Per-step framework cost: images/s of `ResNetClassifier` under `Trainer.fit` vs a plain PyTorch loop,
the two interleaved step by step in ONE process.

Both use the same model class, batch, optimizer and the digits data module's train loader (in
memory). Lightning runs as users run it: progress bar, TensorBoard logging and torchmetrics on.

What it measures: what Lightning adds inside a training step (loop, hooks, logging, metrics, progress
bar), with machine load hitting both sides alike. What it hides, by design: everything paid per process
or per epoch (imports, set-up, validation, checkpoints, the report), the process's allocator state (both
loops share one heap) and the data path (both read the same loader). The `whole_run` section measures
those, on whole processes; this one explains where inside a step a difference comes from.

How: a callback runs one plain-loop step at the end of every Lightning step, so the k-th Lightning step
and the k-th plain step see the same machine state. A Lightning step is the time from the end of the
previous plain step to the end of this Lightning step (its data fetch, hooks, logging, progress bar and
optimizer closure, all of it); a plain step is the time that our callback spends in it. Earlier versions
alternated whole runs of 15 steps; on this 2-core VM their paired ratios spread from 0.85 to 1.10,
wider than the effect measured.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Iterable, Iterator

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger

from benchmarks.common import Row
from lightning_resnet.data import DigitsDataModule
from lightning_resnet.models import ResNetClassifier


def _model(arch: str) -> ResNetClassifier:
    return ResNetClassifier(arch=arch, num_classes=10, optimizer=lambda params: torch.optim.SGD(params, lr=0.01))


class PlainLoop:
    """A hand-written training loop, one `step()` at a time: data, forward, loss, backward, optimizer step."""

    def __init__(self, loader: Iterable, arch: str, device: torch.device) -> None:
        self.loader, self.device = loader, device
        self.model = _model(arch).to(device).train()
        self.optimizer = self.model.optimizer_factory(self.model.parameters())
        self.batches: Iterator = iter(loader)

    def step(self) -> None:
        try:
            x, y = next(self.batches)
        except StopIteration:  # a new epoch, as a plain loop's `for epoch ...: for x, y in loader` does
            self.batches = iter(self.loader)
            x, y = next(self.batches)
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        loss = self.model.loss_fn(self.model(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        loss.item()  # a hand-written loop reads its loss every step (torchvision's reference script does)


class Interleave(pl.Callback):
    """Runs one plain-loop step after every Lightning step and times both."""

    def __init__(self, plain: PlainLoop) -> None:
        self.plain = plain
        self.lightning: list[float] = []
        self.plain_steps: list[float] = []
        self._last = time.perf_counter()

    def on_train_start(self, *args: object) -> None:
        self._last = time.perf_counter()

    def on_train_batch_end(self, *args: object) -> None:
        lightning_end = time.perf_counter()
        self.plain.step()
        plain_end = time.perf_counter()
        self.lightning.append(lightning_end - self._last)
        self.plain_steps.append(plain_end - lightning_end)
        self._last = plain_end


class ModelBatches:
    """The data module's training loader as the model takes it (normalised floats: what the data module's
    `on_after_batch_transfer` does under a Trainer), for the plain loop and a Trainer given the loader alone."""

    def __init__(self, dm: DigitsDataModule) -> None:
        self.dm, self.loader = dm, dm.train_dataloader()

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator:
        return (self.dm.model_input(batch, train=True) for batch in self.loader)


def interleaved_run(loader: Iterable, arch: str, steps: int) -> Interleave:
    """One `Trainer.fit` of `steps` steps with the plain loop interleaved; returns the step times."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    timer = Interleave(PlainLoop(loader, arch, device))
    with tempfile.TemporaryDirectory() as logs:
        trainer = pl.Trainer(
            accelerator="auto",
            devices=1,
            max_steps=steps,
            limit_val_batches=0,
            callbacks=[timer, pl.callbacks.TQDMProgressBar(refresh_rate=10)],
            logger=TensorBoardLogger(logs),
            log_every_n_steps=10,
            enable_checkpointing=False,
            enable_model_summary=False,
        )
        trainer.fit(_model(arch), train_dataloaders=loader)
    return timer


def bootstrap_interval(plain: list[float], light: list[float], draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % interval of median(plain) / median(lightning) over resampled step pairs (pairs kept together)."""
    pairs = np.array([plain, light])
    picks = np.random.default_rng(seed).integers(0, pairs.shape[1], size=(draws, pairs.shape[1]))
    ratios = np.median(pairs[0][picks], axis=1) / np.median(pairs[1][picks], axis=1)
    low, high = np.percentile(ratios, [2.5, 97.5])
    return float(low), float(high)


def run(arch: str = "resnet18", batch_size: int = 64, steps: int = 100, warmup: int = 5, repeats: int = 3) -> list[Row]:
    dm = DigitsDataModule(image_size=32, batch_size=batch_size, num_workers=0)
    dm.setup("fit")
    loader = ModelBatches(dm)
    light: list[float] = []
    plain: list[float] = []
    run_ratios = []
    for _ in range(repeats):
        timer = interleaved_run(loader, arch, steps)
        lt, pt = timer.lightning[warmup:], timer.plain_steps[warmup:]
        light += lt
        plain += pt
        run_ratios.append(statistics.median(pt) / statistics.median(lt))
    light_rate = batch_size / statistics.median(light)
    plain_rate = batch_size / statistics.median(plain)
    low, high = bootstrap_interval(plain, light)
    setting = (
        f"{arch}, digits 32 px, batch {batch_size}, {len(light)} steps each "
        f"({repeats} runs x {steps - warmup}, interleaved in one process), median step"
    )
    per_run = ", ".join(f"{r:.3f}" for r in run_ratios)
    return [
        Row("overhead", "per step: plain PyTorch loop", plain_rate, "img/s", setting),
        Row("overhead", "per step: Lightning Trainer.fit", light_rate, "img/s", "progress bar, logs, metrics on"),
        Row(
            "overhead",
            "per-step ratio Lightning / plain, interleaved",
            light_rate / plain_rate,
            "",
            f"95 % interval {low:.3f}-{high:.3f} (bootstrap over step pairs); runs {per_run}; target >= 0.97; "
            "hides per-process and per-epoch costs and the data path (see whole_run)",
        ),
        Row(
            "overhead",
            "per-step ratio by total time, interleaved",
            sum(plain) / sum(light),
            "",
            "mean instead of median: includes epoch ends and noise bursts",
        ),
    ]
