"""Start-up and whole-run cost of the default command, measured on a child process.

Seconds from `python -m lightning_resnet` to its first training step (imports, config composition,
data and model set-up), then wall time and peak RSS of the complete default digits run.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl

from benchmarks.common import Row

FIRST_STEP_ENV = "LIGHTNING_RESNET_FIRST_STEP_FILE"


class FirstStepStamp(pl.Callback):
    """Writes the wall-clock time of the first training batch to the file named by the env var."""

    def on_train_batch_start(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step == 0 and os.environ.get(FIRST_STEP_ENV):
            Path(os.environ[FIRST_STEP_ENV]).write_text(repr(time.time()))


def _run(args: list[str], env: dict[str, str], cwd: str) -> float:
    started = time.time()
    subprocess.run(
        [sys.executable, "-m", "lightning_resnet", *args],
        check=True,
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.time() - started


def run(full_epochs: int = 10) -> list[Row]:
    root = str(Path(__file__).resolve().parent.parent)
    with tempfile.TemporaryDirectory() as tmp:
        stamp = Path(tmp) / "first_step"
        env = {**os.environ, FIRST_STEP_ENV: str(stamp), "PYTHONPATH": root}
        started = time.time()
        _run(
            [
                "trainer.max_epochs=1",
                "trainer.limit_train_batches=2",
                "test=false",
                "+callbacks.first_step._target_=benchmarks.startup.FirstStepStamp",
                f"hydra.run.dir={tmp}/a",
            ],
            env,
            root,
        )
        to_first_step = float(stamp.read_text()) - started
        wall = _run([f"trainer.max_epochs={full_epochs}", f"hydra.run.dir={tmp}/b"], env, root)
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Linux: KiB
    return [
        Row("startup", "command to first training step", to_first_step, "s", "imports, compose, data + model set-up"),
        Row("startup", f"default digits run, {full_epochs} epochs", wall, "s", "python -m lightning_resnet"),
        Row("startup", "peak RSS of the runs", peak_mib, "MiB", "largest child process"),
    ]
