"""What the default run no longer pays for (issue 20), each kept honest by a real process, file or thread:
the allocator handing memory back at every step, `last.ckpt` written in the training thread, report
figures drawn one after another, report libraries imported before the first step."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from lightning_resnet.builders import build_datamodule, build_model, build_trainer
from lightning_resnet.callbacks.checkpointing import LastCheckpoint
from lightning_resnet.checkpoints import AtomicCheckpointIO
from lightning_resnet.reporting.collector import OutputCollector
from lightning_resnet.reporting.figures import FigureProcess
from lightning_resnet.reporting.report import write_report
from tests.conftest import FAST, compose_config

REPO = Path(__file__).resolve().parents[1]
QUICK = ["trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "callbacks.reports=null", "test=false"]

# -- the allocator ----------------------------------------------------------------------------------

# Twenty 4 MiB blocks allocated and freed per round, as a step's activations are: page faults per round.
FAULTS_PER_ROUND = """
import resource, sys, torch
from lightning_resnet.utils import retain_freed_memory
print(retain_freed_memory() if sys.argv[1] == "retain" else None)
faults = []
for _ in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [torch.ones(1 << 20) for _ in range(20)]
    del blocks
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sum(faults[3:]) // 5)
"""


def faults_per_round(mode: str, **env: str) -> tuple[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", FAULTS_PER_ROUND, mode],
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        check=True,
    )
    returned, faults = done.stdout.split()
    return returned, int(faults)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator only")
def test_retained_memory_is_reused_instead_of_faulted_in_again_every_round():
    returned, retained = faults_per_round("retain")
    # the baseline: glibc's starting mmap threshold, fixed (its dynamic raise depends on what the process freed
    # before, and whether the heap top gets trimmed on its layout), so every 4 MiB block is mapped and
    # faulted in again each round: 80 MiB, ~20,000 pages
    _, faulting = faults_per_round("default", MALLOC_MMAP_THRESHOLD_="131072")
    assert returned == "True"
    assert faulting > 10_000
    assert retained < faulting / 10


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator only")
def test_allocator_settings_in_the_environment_are_left_alone():
    returned, _ = faults_per_round("retain", MALLOC_TRIM_THRESHOLD_="65536")
    assert returned == "False"


# -- last.ckpt written off the training thread ------------------------------------------------------


class RecordingIO(AtomicCheckpointIO):
    """The trainer's checkpoint IO, noting which thread wrote which file; fails `last.ckpt` from write `fail_at`."""

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        self.writes: list[tuple[str, str]] = []
        self.fail_at = fail_at

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        self.writes.append((Path(path).name, threading.current_thread().name))
        if self.fail_at is not None and Path(path).name == "last.ckpt" and len(self.writes) >= self.fail_at:
            raise OSError(28, "No space left on device")
        super().save_checkpoint(checkpoint, path, storage_options)


class EpochEndProbe(pl.Callback):
    """At each epoch's end: the weights as they are, and (from the second epoch) `last.ckpt` as it is on disk
    once the previous write finished. Runs before `LastCheckpoint`: Lightning calls checkpoint callbacks last."""

    def __init__(self) -> None:
        self.weights: list[dict[str, torch.Tensor]] = []
        self.on_disk: list[dict[str, Any]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        last = next(c for c in trainer.callbacks if isinstance(c, LastCheckpoint))
        if self.weights:
            last.wait()
            self.on_disk.append(torch.load(last.path, map_location="cpu", weights_only=True))
        self.weights.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})


def fit(tmp_path: Path, io: RecordingIO, *callbacks: pl.Callback, epochs: int = 3) -> pl.Trainer:
    cfg = compose_config(tmp_path / "run", [*FAST, *QUICK, f"trainer.max_epochs={epochs}"])
    datamodule = build_datamodule(cfg)
    trainer = build_trainer(cfg)
    trainer.callbacks.extend(callbacks)
    trainer.strategy.checkpoint_io = io
    trainer.fit(build_model(cfg, datamodule), datamodule=datamodule)
    return trainer


def test_last_checkpoint_is_written_by_a_writer_thread_with_the_state_of_its_epochs_end(tmp_path):
    io, probe = RecordingIO(), EpochEndProbe()
    trainer = fit(tmp_path, io, probe)

    writers = {name for file, name in io.writes if file == "last.ckpt"}
    assert writers == {"last-checkpoint_0"}  # never the training thread
    assert {name for file, name in io.writes if file.startswith("best")} == {threading.main_thread().name}
    # written while the next epoch trained, yet holding its own epoch's state
    assert [saved["epoch"] for saved in probe.on_disk] == [0, 1]
    for saved, weights in zip(probe.on_disk, probe.weights, strict=False):
        assert saved.keys() >= {"optimizer_states", "lr_schedulers", "callbacks", "loops"}
        assert all(torch.equal(saved["state_dict"][k], v) for k, v in weights.items())
    assert not torch.equal(probe.weights[0]["head.1.weight"], probe.weights[1]["head.1.weight"])
    # complete when fit returns: the last epoch's
    final = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert final["epoch"] == 2 and final["global_step"] == trainer.global_step
    assert [h["epoch"] for h in final["callbacks"]["MetricHistory"]["epochs"]] == [0, 1, 2]
    assert not list((tmp_path / "run" / "checkpoints").glob(".*.tmp"))


def test_a_failed_background_write_fails_fitting_with_its_error(tmp_path):
    io = RecordingIO(fail_at=1)
    with pytest.raises(OSError, match="No space left on device"):
        fit(tmp_path, io, epochs=2)
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()


# -- report figures drawn in a forked process --------------------------------------------------------


def drawn_by(pid_file: Path) -> Any:
    """A drawing that notes the id of the process drawing it."""

    def draw() -> plt.Figure:
        pid_file.write_text(str(os.getpid()))
        fig, ax = plt.subplots(figsize=(2, 2))
        ax.plot([0, 1], [1, 0])
        return fig

    return draw


@pytest.mark.skipif(sys.platform != "linux", reason="forked only on Linux")
def test_figures_are_drawn_by_a_child_and_redrawn_here_when_it_fails(tmp_path):
    pngs = FigureProcess({"line": drawn_by(tmp_path / "line.pid")}, tmp_path).join()
    assert int((tmp_path / "line.pid").read_text()) != os.getpid()
    assert Image.open(pngs["line"]).size == (220, 220)  # 2 inches at 110 dpi

    parent = os.getpid()

    def fails_in_a_child() -> plt.Figure:
        if os.getpid() != parent:
            os._exit(3)  # a crash: no exception to report
        return drawn_by(tmp_path / "again.pid")()

    pngs = FigureProcess({"again": fails_in_a_child}, tmp_path).join()
    assert int((tmp_path / "again.pid").read_text()) == parent
    assert Image.open(pngs["again"]).size == (220, 220)


def small_test_pass() -> OutputCollector:
    torch.manual_seed(0)
    targets = torch.arange(60) % 3
    logits = torch.randn(60, 3) + 4 * torch.nn.functional.one_hot(targets, 3)
    features = torch.randn(60, 16) + 3 * torch.nn.functional.one_hot(targets, 16)
    collector = OutputCollector([0.5] * 3, [0.25] * 3, num_mistakes=4)
    collector.update(torch.randn(60, 3, 8, 8), logits, targets, features)
    return collector


def test_the_report_holds_the_same_files_and_pixels_with_or_without_the_figure_process(tmp_path):
    history = [{"epoch": e, "train/acc": 0.5 + e / 10, "val/acc": 0.4 + e / 10} for e in range(3)]
    reports = {}
    for forked in (True, False):
        out = tmp_path / f"forked={forked}"
        reports[forked] = write_report(
            small_test_pass(), ["a", "b", "c"], out, history, "val/acc", "max", figure_process=forked
        )
    assert reports[True].summary == reports[False].summary
    assert (
        list(reports[True].figures)
        == list(reports[False].figures)
        == ["confusion_matrix", "curves", "embedding", "mistakes"]
    )
    files = [sorted(p.name for p in (tmp_path / f"forked={forked}").iterdir()) for forked in (True, False)]
    assert files[0] == files[1]
    for name in reports[True].figures:
        forked, here = (np.asarray(Image.open(reports[f].figures[name])) for f in (True, False))
        assert np.array_equal(forked, here), name


# -- imports ---------------------------------------------------------------------------------------


def test_the_train_task_imports_the_report_libraries_only_when_a_test_ends():
    later = (
        "sklearn.decomposition",
        "sklearn.manifold",
        "lightning_resnet.reporting.report",
        "lightning_resnet.inference",
    )
    code = f"import sys, lightning_resnet.tasks.train; print([m for m in sys.modules if m.startswith({later!r})])"
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(done.stdout.strip().replace("'", '"')) == []


def test_the_train_command_imports_torch_only_when_a_job_starts(tmp_path):
    """A sweep's driver, `--cfg` and a rejected override compose configs only: no torch, no Lightning."""
    heavy = ("torch", "pytorch_lightning", "torchvision")
    code = (
        "import sys; from lightning_resnet.train import cli\n"
        "sys.argv = ['train', '--cfg', 'job', 'model=resnet50']; cli()\n"
        f"print(sorted(m for m in sys.modules if m in {heavy!r}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert "arch: resnet50" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "[]"
