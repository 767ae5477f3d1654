"""Start-up and whole-run cost of the default command, measured on a child process.

Seconds from `python -m lightning_resnet` to its first training step (imports, config composition,
data and model set-up), then wall time and peak RSS of the complete default digits run.
"""

from __future__ import annotations

import contextlib
import os
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


def _run(args: list[str], env: dict[str, str], cwd: str) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of one `python -m lightning_resnet` child.

    The peak is the child's VmHWM, polled from /proc while it runs. getrusage cannot give it: Linux
    carries the RSS high-water mark of the forked copy of this (large) process over the exec.
    """
    started = time.time()
    command = [sys.executable, "-m", "lightning_resnet", *args]
    child = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    status, peak_kib = Path(f"/proc/{child.pid}/status"), 0
    while child.poll() is None:
        with contextlib.suppress(OSError):
            lines = status.read_text().splitlines()
            peak_kib = max([peak_kib, *(int(line.split()[1]) for line in lines if line.startswith("VmHWM:"))])
        time.sleep(0.2)
    if child.returncode:
        raise subprocess.CalledProcessError(child.returncode, command)
    return time.time() - started, peak_kib / 1024


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
        wall, peak_mib = _run([f"trainer.max_epochs={full_epochs}", f"hydra.run.dir={tmp}/b"], env, root)
    return [
        Row("startup", "command to first training step", to_first_step, "s", "imports, compose, data + model set-up"),
        Row("startup", f"default digits run, {full_epochs} epochs", wall, "s", "python -m lightning_resnet"),
        Row("startup", "peak RSS of the default run", peak_mib, "MiB", "VmHWM of the run's process"),
    ]
