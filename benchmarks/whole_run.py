"""The default run as a user feels it: whole processes, ours against the same work in plain PyTorch.

`python -m lightning_resnet` (the default config: resnet18, digits, 10 epochs) and
`benchmarks/plain_digits.py` (the same split, normalisation, batch, Adam, cosine schedule, validation
every epoch and test with the best-val weights, in a plain loop) run as separate processes, in turn
(A B A B ...), several pairs. Each pair's ratio compares two runs made one after the other, so the
drift of a shared machine's speed cancels; the median over pairs is quoted with its spread.

Per run: wall seconds from launch to exit, CPU seconds (user, sys) from the kernel's accounting of the
finished child, seconds from launch to the first training step, seconds per training epoch (first
batch to last optimizer step) and per whole epoch (with validation and checkpoints), peak RSS, and test
accuracy. This sees what the interleaved `overhead` section cannot: everything paid per process or per
epoch (imports, config, set-up, validation bookkeeping, checkpoints, the report, the allocator's state).

Our run gets one extra callback, `RunClock`, that notes times at epoch boundaries (no per-step work but
one comparison); both write their output to files (no terminal: our run logs one line per epoch).
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from benchmarks.common import Row

ROOT = Path(__file__).resolve().parent.parent
PLAIN_SCRIPT = Path(__file__).resolve().parent / "plain_digits.py"
CLOCK_ENV = "LIGHTNING_RESNET_BENCH_CLOCK"  # file RunClock writes its JSON to


class RunClock(pl.Callback):
    """Notes the wall-clock time of the first training step and each epoch's boundaries; writes them as
    JSON to the file named by `$LIGHTNING_RESNET_BENCH_CLOCK` when fitting ends."""

    def __init__(self) -> None:
        self.first_step: float | None = None
        self.epoch_train_s: list[float] = []
        self.epoch_s: list[float] = []
        self._epoch_started = 0.0
        self._trained = False

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if self.first_step is None:
            self.first_step = time.time()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        now = time.perf_counter()
        if self.epoch_train_s:  # the previous epoch ends where this one starts (its checkpoints included)
            self.epoch_s.append(now - self._epoch_started)
        self._epoch_started, self._trained = now, False

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._end_training(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._end_training(trainer)  # an epoch without validation

    def _end_training(self, trainer: pl.Trainer) -> None:
        if not trainer.sanity_checking and not self._trained:
            self.epoch_train_s.append(time.perf_counter() - self._epoch_started)
            self._trained = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if len(self.epoch_s) < len(self.epoch_train_s):
            self.epoch_s.append(time.perf_counter() - self._epoch_started)
        path = os.environ.get(CLOCK_ENV)
        if path:
            record = {"first_step_time": self.first_step, "epoch_train_s": self.epoch_train_s, "epoch_s": self.epoch_s}
            Path(path).write_text(json.dumps(record))


@dataclass
class ProcessRun:
    """What one finished child cost, from outside: wall, CPU and peak memory."""

    wall_s: float
    user_s: float
    sys_s: float
    peak_mib: float
    started: float  # time.time() at launch


@dataclass
class RunRecord:
    """One run of either side: its process figures and what it reported about itself."""

    process: ProcessRun
    first_step_s: float
    epoch_train_s: list[float] = field(default_factory=list)
    epoch_s: list[float] = field(default_factory=list)
    test_acc: float | None = None


def run_process(command: Sequence[str], cwd: Path, log: Path, env: dict[str, str] | None = None) -> ProcessRun:
    """Run `command` to its end, output into `log`; its wall time, CPU time (`os.wait4`) and peak RSS.

    The peak is the child's VmHWM, polled from /proc: the rusage maximum would carry over the RSS of this
    (large) process from before the child's exec.
    """
    started, clock = time.time(), time.perf_counter()
    with log.open("wb") as out:
        child = subprocess.Popen(list(command), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        ended: list[Any] = []  # (wait4's answer, the clock when it came): a thread waits, this one polls
        waiter = threading.Thread(target=lambda: ended.extend([os.wait4(child.pid, 0), time.perf_counter()]))
        waiter.start()
        status_file, peak_kib = Path(f"/proc/{child.pid}/status"), 0
        while waiter.is_alive():
            with contextlib.suppress(OSError, ValueError, IndexError):
                for line in status_file.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak_kib = max(peak_kib, int(line.split()[1]))
            waiter.join(timeout=0.1)
    (_, status, usage), wall = ended[0], ended[1] - clock
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise RuntimeError(f"{' '.join(command)} exited {child.returncode}; last lines of {log}:\n" + "\n".join(tail))
    return ProcessRun(wall, usage.ru_utime, usage.ru_stime, peak_kib / 1024, started)


def default_run(folder: Path, epochs: int) -> RunRecord:
    """`python -m lightning_resnet` with the default config (and `trainer.max_epochs=epochs`)."""
    folder.mkdir(parents=True)
    clock_file = folder / "clock.json"
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))  # no empty entry: no cwd
    env = {**os.environ, CLOCK_ENV: str(clock_file), "PYTHONPATH": path}
    command = [
        sys.executable,
        "-m",
        "lightning_resnet",
        f"trainer.max_epochs={epochs}",
        f"hydra.run.dir={folder / 'run'}",
        f"+callbacks.bench_clock._target_={RunClock.__module__}.{RunClock.__qualname__}",
    ]
    process = run_process(command, folder, folder / "output.log", env)
    clock = json.loads(clock_file.read_text())
    metrics = json.loads((folder / "run" / "metrics.json").read_text())
    return RunRecord(
        process,
        clock["first_step_time"] - process.started,
        clock["epoch_train_s"],
        clock["epoch_s"],
        metrics["test"].get("test/acc"),
    )


def plain_run(folder: Path, epochs: int) -> RunRecord:
    """`benchmarks/plain_digits.py --epochs epochs`; its figures from the JSON line it prints last."""
    folder.mkdir(parents=True)
    command = [sys.executable, str(PLAIN_SCRIPT), "--epochs", str(epochs), "--out", str(folder)]
    process = run_process(command, folder, folder / "output.log")
    result = json.loads((folder / "output.log").read_text().strip().splitlines()[-1])
    epoch_s = [t + v for t, v in zip(result["epoch_train_s"], result["epoch_val_s"], strict=True)]
    return RunRecord(
        process, result["first_step_time"] - process.started, result["epoch_train_s"], epoch_s, result["test_acc"]
    )


def alternate(first: Callable[[int], Any], second: Callable[[int], Any], pairs: int) -> list[tuple[Any, Any]]:
    """`first(i)` then `second(i)` for each pair i: A B A B ..., so both sides sample the same stretch of time."""
    results = []
    for index in range(pairs):
        results.append((first(index), second(index)))
    return results


def spread(values: Sequence[float], digits: int = 2) -> str:
    """`min-max` of `values`, for the note next to a median."""
    return f"{min(values):.{digits}f}-{max(values):.{digits}f}"


def paired_ratios(pairs: Sequence[tuple[float, float]]) -> list[float]:
    """a / b of each pair."""
    return [a / b for a, b in pairs]


def run(pairs: int = 3, epochs: int = 10, warmup: int = 1) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="bench-whole-run-") as tmp:
        folder = Path(tmp)
        for index in range(warmup):  # page cache, font cache, the digits file: not counted
            default_run(folder / f"warmup-default-{index}", 1)
            plain_run(folder / f"warmup-plain-{index}", 1)
        runs = alternate(
            lambda i: default_run(folder / f"default-{i}", epochs),
            lambda i: plain_run(folder / f"plain-{i}", epochs),
            pairs,
        )
    ours, plain = [a for a, _ in runs], [b for _, b in runs]
    return summary_rows(ours, plain, epochs)


def summary_rows(ours: Sequence[RunRecord], plain: Sequence[RunRecord], epochs: int) -> list[Row]:
    """The section's rows from the paired records (pair i = ours[i], plain[i])."""
    walls = paired_ratios([(a.process.wall_s, b.process.wall_s) for a, b in zip(ours, plain, strict=True)])
    trains = paired_ratios(
        [
            (statistics.median(a.epoch_train_s), statistics.median(b.epoch_train_s))
            for a, b in zip(ours, plain, strict=True)
        ]
    )
    wholes = paired_ratios(
        [(statistics.median(a.epoch_s), statistics.median(b.epoch_s)) for a, b in zip(ours, plain, strict=True)]
    )
    n = len(walls)

    def median_of(records: Sequence[RunRecord], get: Callable[[RunRecord], float]) -> tuple[float, str]:
        values = [get(r) for r in records]
        return statistics.median(values), spread(values)

    rows = []
    for side, records, what in (
        ("default run", ours, f"python -m lightning_resnet, default config, {epochs} epochs"),
        ("plain script", plain, "benchmarks/plain_digits.py, the same work in a plain loop"),
    ):
        wall, wall_range = median_of(records, lambda r: r.process.wall_s)
        first, first_range = median_of(records, lambda r: r.first_step_s)
        user, _ = median_of(records, lambda r: r.process.user_s)
        system, _ = median_of(records, lambda r: r.process.sys_s)
        peak, _ = median_of(records, lambda r: r.process.peak_mib)
        accuracy = [r.test_acc for r in records if r.test_acc is not None]
        rows += [
            Row("whole_run", f"{side}: wall", wall, "s", f"median of {n} ({wall_range}); {what}"),
            Row("whole_run", f"{side}: command to first step", first, "s", f"median ({first_range})"),
            Row(
                "whole_run",
                f"{side}: CPU user + sys",
                user + system,
                "s",
                f"medians: user {user:.1f}, sys {system:.1f}",
            ),
            Row("whole_run", f"{side}: peak RSS", peak, "MiB", "VmHWM of the process"),
            Row(
                "whole_run",
                f"{side}: test accuracy",
                statistics.median(accuracy) if accuracy else "n/a",
                "",
                "best-val weights, seed 42" + (f" ({spread(accuracy, 4)})" if len(set(accuracy)) > 1 else ""),
            ),
        ]
    rows += [
        Row(
            "whole_run",
            "ratio default / plain, whole process",
            statistics.median(walls),
            "",
            f"median of {n} pair ratios ({', '.join(f'{r:.3f}' for r in walls)}), runs alternating; target <= 1.2",
        ),
        Row(
            "whole_run",
            "ratio default / plain, training epoch",
            statistics.median(trains),
            "",
            f"median epoch, first batch to last step ({', '.join(f'{r:.3f}' for r in trains)})",
        ),
        Row(
            "whole_run",
            "ratio default / plain, whole epoch",
            statistics.median(wholes),
            "",
            f"median epoch with validation and checkpoints ({', '.join(f'{r:.3f}' for r in wholes)})",
        ),
    ]
    return rows
