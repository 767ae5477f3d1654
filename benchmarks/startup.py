"""Start-up: seconds before the default command trains, measured on child processes.

Each figure is the median of `repeats` runs, the commands in turn (A B C A B C ...):

- importing the train task (`import lightning_resnet.tasks.train`) against importing what the plain
  script of `whole_run` imports (torch, torchvision, scikit-learn's digits and splits): what the
  framework's imports cost on top (Lightning and torchmetrics, Hydra, ours), timed inside the child;
  and the whole child process, which adds the interpreter's exit (a second or so with torch loaded);
- `python -m lightning_resnet --help` (imports, config composition, no data);
- `python -m lightning_resnet` to its first training step (imports, config, data, model, trainer set-up,
  the sanity check), on a run stopped after 2 batches.

The whole default run (wall, CPU, peak memory, first step of both sides) is in the `whole_run` section.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import Row
from benchmarks.whole_run import CLOCK_ENV, ROOT, RunClock

TRAIN_IMPORT = "import lightning_resnet.tasks.train"
PLAIN_IMPORTS = "import torch, torchvision, sklearn.datasets, sklearn.model_selection"


def timed(command: Sequence[str], cwd: Path, env: dict[str, str]) -> float:
    """Wall seconds of `command` run to its end (its output discarded)."""
    started = time.perf_counter()
    subprocess.run(list(command), cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def import_time(statement: str, cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """(seconds `statement` takes inside a fresh interpreter, seconds of that whole process)."""
    code = f"import time\nstarted = time.perf_counter()\n{statement}\nprint(time.perf_counter() - started)"
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return float(done.stdout.split()[-1]), time.perf_counter() - started


def first_step(folder: Path, env: dict[str, str]) -> float:
    """Seconds from launching `python -m lightning_resnet` to its first training step."""
    clock = folder / "clock.json"
    overrides = [
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "test=false",
        f"+callbacks.bench_clock._target_={RunClock.__module__}.{RunClock.__qualname__}",
        f"hydra.run.dir={folder / 'run'}",
    ]
    started = time.time()
    timed([sys.executable, "-m", "lightning_resnet", *overrides], folder, {**env, CLOCK_ENV: str(clock)})
    return json.loads(clock.read_text())["first_step_time"] - started


def spread(values: Sequence[float]) -> str:
    return f"median of {len(values)} ({min(values):.2f}-{max(values):.2f})"


def run(repeats: int = 3) -> list[Row]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    ours, plain, ours_process, plain_process, help_, steps = [], [], [], [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        folder = Path(tmp)
        for index in range(repeats):
            sides = (TRAIN_IMPORT, ours, ours_process), (PLAIN_IMPORTS, plain, plain_process)
            for statement, imports, process in sides:
                seconds, whole = import_time(statement, folder, env)
                imports.append(seconds)
                process.append(whole)
            help_.append(timed([sys.executable, "-m", "lightning_resnet", "--help"], folder, env))
            run_folder = folder / f"first-step-{index}"
            run_folder.mkdir()
            steps.append(first_step(run_folder, env))
    median = statistics.median
    return [
        Row("startup", "import the train task", median(ours), "s", f"{spread(ours)}; {TRAIN_IMPORT}"),
        Row("startup", "import what the plain script uses", median(plain), "s", f"{spread(plain)}; {PLAIN_IMPORTS}"),
        Row(
            "startup",
            "imports on top of the plain script's",
            median(ours) - median(plain),
            "s",
            "Lightning + torchmetrics (which imports scipy.signal and matplotlib), Hydra, ours",
        ),
        Row(
            "startup",
            "process that only imports: ours, plain",
            median(ours_process),
            "s",
            f"plain {median(plain_process):.2f} s; start + imports + the interpreter's exit",
        ),
        Row("startup", "python -m lightning_resnet --help", median(help_), "s", spread(help_)),
        Row("startup", "command to first training step", median(steps), "s", f"{spread(steps)}; default config"),
    ]
