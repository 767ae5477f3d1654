"""Nothing lost, nothing silent: a killed or crashed run loses at most the epoch in progress, and no run
reports success it did not have, trains from scratch when asked to resume, or writes into another run.

Real files, real signals to real child processes, a real (tiny) full file system; 32 px digits, 2 train
batches and 1 val batch per epoch.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lightning_resnet.builders import build_trainer
from lightning_resnet.errors import ConfigError
from lightning_resnet.models.classifier import ResNetClassifier
from lightning_resnet.tasks import train
from lightning_resnet.tasks.train import run
from tests.conftest import FAST, compose_config, read_json

QUICK = [
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "callbacks.reports=null",
]
REPO = Path(__file__).resolve().parents[1]


def cfg_for(run_dir: Path, *overrides: str):
    return compose_config(run_dir, [*FAST, *QUICK, *overrides])


def nothing_may_be_built(monkeypatch) -> None:
    """Make any attempt to build the data (the first step of a run) fail the test."""

    def fail(cfg):
        raise AssertionError("the run got as far as building the data module")

    monkeypatch.setattr(train, "build_datamodule", fail)


def cli(run_dir: Path, *overrides: str, **popen) -> subprocess.Popen:
    command = [sys.executable, "-m", "lightning_resnet", f"hydra.run.dir={run_dir}", *FAST, *QUICK, *overrides]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(command, cwd=run_dir.parent, env=env, text=True, **popen)


def descendants(pid: int) -> set[int]:
    """Every live process below `pid`, from /proc (no psutil)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def history_epochs(run_dir: Path) -> list[int]:
    return [row["epoch"] for row in read_json(run_dir / "history.json")]


# -- 1. last.ckpt is the last completed epoch; best is weights only ----------------------------------


@pytest.mark.slow
def test_last_checkpoint_is_the_last_epoch_even_when_the_best_stops_improving(tmp_path):
    run_dir = tmp_path / "run"
    # `epoch` minimised: epoch 0 stays the best forever, so the best checkpoint is never saved again.
    flat = ["callbacks.model_checkpoint.monitor=epoch", "callbacks.model_checkpoint.mode=min", "test=false"]
    run(cfg_for(run_dir, "trainer.max_epochs=3", *flat))
    folder = run_dir / "checkpoints"
    last = torch.load(folder / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 2  # Lightning 2.6's save_last: still 0
    assert "optimizer_states" in last and "lr_schedulers" in last and "callbacks" in last

    best = folder / "best-epoch000.ckpt"
    assert "optimizer_states" not in torch.load(best, map_location="cpu", weights_only=True)  # weights only
    assert best.stat().st_size < (folder / "last.ckpt").stat().st_size / 2  # resnet18 + Adam: a third
    assert ResNetClassifier.from_checkpoint(best).hparams.class_names == [str(i) for i in range(10)]

    run(cfg_for(run_dir, "trainer.max_epochs=4", "ckpt_path=last", *flat))
    assert history_epochs(run_dir) == [0, 1, 2, 3]  # nothing repeated
    assert sorted(p.name for p in folder.iterdir()) == ["best-epoch000.ckpt", "last.ckpt"]  # no temp files


def test_with_weight_averaging_the_best_checkpoint_keeps_the_averaged_weights(tmp_path):
    """EMA weights reach a checkpoint through a callback hook that weights-only saves skip."""

    def best_saves_weights_only(*overrides: str) -> bool:
        trainer = build_trainer(cfg_for(tmp_path / "run", *overrides))
        return train.best_checkpoint_callback(trainer).save_weights_only

    assert best_saves_weights_only()
    assert not best_saves_weights_only("callbacks=[default,ema]")


# -- 2. and 10. ckpt_path is checked before anything is built ----------------------------------------


def test_resuming_without_a_last_checkpoint_fails_before_training_naming_the_folder(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "history.json").write_text("[]")  # a run killed before its first epoch ended
    nothing_may_be_built(monkeypatch)
    with pytest.raises(ConfigError, match=rf"ckpt_path=last: no last.ckpt in {run_dir / 'checkpoints'}"):
        run(cfg_for(run_dir, "trainer.max_epochs=1", "ckpt_path=last"))
    assert (run_dir / "history.json").read_text() == "[]"
    assert not (run_dir / "metrics.json").exists()


def test_a_truncated_checkpoint_fails_before_anything_is_built(tmp_path, monkeypatch):
    whole = tmp_path / "whole.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(10_000)}, "epoch": 3}, whole)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])  # a copy cut short
    nothing_may_be_built(monkeypatch)
    with pytest.raises(ConfigError, match=rf"ckpt_path={truncated}: cannot be read .*\(corrupt"):
        run(cfg_for(tmp_path / "run", f"ckpt_path={truncated}"))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_weights_only_checkpoint_is_refused_as_a_resume_point(tmp_path, monkeypatch):
    from lightning_resnet import __version__
    from lightning_resnet.checkpoints import CHECKPOINT_KEY

    best = tmp_path / "best-epoch004.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}, CHECKPOINT_KEY: {"version": __version__}}, best)
    nothing_may_be_built(monkeypatch)
    with pytest.raises(ConfigError, match=r"best-epoch004.ckpt holds weights only .*ckpt_path=last"):
        run(cfg_for(tmp_path / "run", f"ckpt_path={best}"))


# -- 3. one live run per run folder; a finished run's folder is not silently reused ------------------


@pytest.mark.slow
def test_a_second_live_run_in_the_same_folder_fails_at_once_naming_the_holder(tmp_path):
    run_dir = tmp_path / "run"
    logs = [tmp_path / f"run{i}.log" for i in range(2)]
    procs = [cli(run_dir, "trainer.max_epochs=3", stdout=log.open("w"), stderr=subprocess.STDOUT) for log in logs]
    ended = {}
    while len(ended) < 2:  # which one ends first, and when
        for proc in procs:
            if proc.pid not in ended and proc.poll() is not None:
                ended[proc.pid] = time.time()
        time.sleep(0.1)
    outputs = {proc.pid: log.read_text() for proc, log in zip(procs, logs, strict=True)}
    ok = [p for p in procs if p.returncode == 0]
    refused = [p for p in procs if p.returncode != 0]
    assert len(ok) == 1 and len(refused) == 1, [p.returncode for p in procs]
    winner, loser = ok[0], refused[0]
    assert f"is in use by another run (pid {winner.pid} " in outputs[loser.pid], outputs[loser.pid][-2000:]
    assert ended[loser.pid] < ended[winner.pid]  # at once, not after training
    assert history_epochs(run_dir) == [0, 1, 2]
    assert read_json(run_dir / "metrics.json")["epochs_run"] == 3


@pytest.mark.slow
def test_a_finished_runs_folder_is_not_reused_unless_asked_to_overwrite(tmp_path):
    run_dir = tmp_path / "run"
    run(cfg_for(run_dir, "trainer.max_epochs=1", "test=false"))
    finished = (run_dir / "metrics.json").read_text()

    with pytest.raises(ConfigError, match=r"holds the results of an earlier run \(metrics.json, history.json, chec"):
        run(cfg_for(run_dir, "trainer.max_epochs=1", "test=false", "seed=7"))
    assert (run_dir / "metrics.json").read_text() == finished

    run(cfg_for(run_dir, "trainer.max_epochs=1", "test=false", "seed=7", "overwrite=true"))
    assert (run_dir / "metrics.json").read_text() != finished
    assert history_epochs(run_dir) == [0]
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 1  # the old run's were deleted


@pytest.mark.slow
def test_a_sweep_resumes_a_job_killed_before_its_first_last_checkpoint_from_scratch(tmp_path, sweep_here):
    sweep = tmp_path / "sweep"
    job = sweep / "0"  # a sweep of one job: no override varies, the folder is its number
    job.mkdir(parents=True)
    (job / "history.json").write_text("[]")  # killed at its first epoch's end, before last.ckpt was written
    sweep_here("optimizer.lr=0.001", *FAST, *QUICK, "trainer.max_epochs=1", f"hydra.sweep.dir={sweep}", "resume=true")
    assert read_json(job / "status.json")["status"] == "ok"
    assert history_epochs(job) == [0]


# -- 4. SIGTERM: last.ckpt saved, non-zero exit, no orphans; the resume repeats no epoch --------------


@pytest.mark.slow
def test_sigterm_saves_the_state_exits_nonzero_and_the_resume_repeats_no_epoch(tmp_path):
    run_dir = tmp_path / "run"
    log = (tmp_path / "first.log").open("w")
    # one DataLoader worker process, so there is a child that must not outlive the run
    proc = cli(run_dir, "trainer.max_epochs=100", "data.num_workers=1", stdout=log, stderr=subprocess.STDOUT)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
    children = descendants(proc.pid)
    assert children  # the DataLoader worker
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) != 0  # Lightning's default: 0, as if the run had finished
    time.sleep(0.5)
    assert not [pid for pid in children if alive(pid)]
    assert not (run_dir / "metrics.json").exists()
    assert "SIGTERM: state at epoch" in (run_dir / "train.log").read_text()

    saved = torch.load(last, map_location="cpu", weights_only=True)  # complete and loadable
    assert "optimizer_states" in saved
    assert not list(last.parent.glob(".*.tmp"))
    resumed = run(cfg_for(run_dir, "ckpt_path=last", f"trainer.max_epochs={saved['epoch'] + 2}"))  # in process
    assert history_epochs(run_dir) == list(range(saved["epoch"] + 2))  # each epoch exactly once
    assert resumed["resumed_from"] == "last"


# -- 5. a full disk: no partial checkpoint, an error naming the file and the free space --------------


@pytest.fixture
def tiny_filesystem(tmp_path):
    """A 1 MB tmpfs at tmp_path/disk (root only), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_a_full_disk_leaves_no_partial_checkpoint_and_names_the_free_space(tmp_path, tiny_filesystem):
    checkpoint_io = build_trainer(cfg_for(tmp_path / "run")).strategy.checkpoint_io  # what the trainer writes with
    folder = tiny_filesystem / "checkpoints"
    folder.mkdir()
    small = {"state_dict": {"w": torch.arange(50_000, dtype=torch.float32)}}  # 200 KB
    checkpoint_io.save_checkpoint(small, folder / "last.ckpt")
    big = {"state_dict": {"w": torch.zeros(500_000)}}  # 2 MB on a 1 MB disk

    for name in ("last.ckpt", "best-epoch007.ckpt"):
        message = rf"cannot write checkpoint {folder / name}: No space left on device \(\d.* free of 1.0 MB"
        with pytest.raises(OSError, match=message):
            checkpoint_io.save_checkpoint(big, folder / name)
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]  # no temp file, no truncated best
    kept = torch.load(folder / "last.ckpt", weights_only=True)
    assert torch.equal(kept["state_dict"]["w"], small["state_dict"]["w"])
