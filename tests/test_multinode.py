"""Multi-node DDP for real: two torchrun "nodes" on loopback train one run into one folder.

Each node is its own `torchrun --nnodes=2 --nproc-per-node=1 --node-rank=<n>` (static rendezvous at
127.0.0.1, one shared `--rdzv-id`), started in the same working directory, as nodes sharing a file system
are; each runs `python -m lightning_resnet trainer=ddp_sim trainer.devices=1 trainer.num_nodes=2`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import FAST, read_json
from tests.test_layout_launch import outside_any_launch

pytestmark = [pytest.mark.engines, pytest.mark.slow]

RDZV_ID = "digits2nodes"
# 1,797 digits split 1257 / 265 / 275: odd val and test splits, so the two ranks get unequal shares
SPLIT = "data.fractions=[0.7,0.147,0.153]"
TEST_IMAGES = 275
TRAIN = [*FAST, SPLIT, "trainer.max_epochs=2", "trainer.limit_train_batches=3"]
TIMEOUT_S = 600
# Test figures of the DDP run against one process evaluating the same checkpoint. The evaluation sampler
# (`compat.UnrepeatedDistributedSampler`) deals each test image to exactly one rank and pads nothing, so the
# synced counts behind acc/f1/precision/recall are the single process's; the mean loss is summed in another
# order, a float32 rounding (~1e-7). Lightning's padding `DistributedSampler` would count one image twice
# here (276 of 275): acc off by up to 1/276 = 3.6e-3, far outside this tolerance.
TOLERANCE = 1e-6


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def loopback_interface() -> str:
    """The loopback's name (`lo`), for gloo, which otherwise listens on the address the host name resolves to."""
    return next(name for _, name in socket.if_nameindex() if name.startswith("lo"))


def start_node(node_rank: int, port: int, cwd: Path, log: Path) -> subprocess.Popen:
    """One node: its torchrun agent and the rank it starts, in a process group of their own."""
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1"),
        *(f"--node-rank={node_rank}", "--master-addr=127.0.0.1", f"--master-port={port}", f"--rdzv-id={RDZV_ID}"),
        *("-m", "lightning_resnet", "trainer=ddp_sim", "trainer.devices=1", "trainer.num_nodes=2", *TRAIN),
    ]
    env = {**outside_any_launch(os.environ), "GLOO_SOCKET_IFNAME": loopback_interface(), "OMP_NUM_THREADS": "1"}
    with log.open("w") as out:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def wait_all(procs: list[subprocess.Popen], timeout_s: float) -> list[int | None]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(p.poll() is None for p in procs):
        if any(p.poll() not in (None, 0) for p in procs):  # one node failed: the other would wait for it
            break
        time.sleep(1)
    return [p.poll() for p in procs]


def stop(procs: list[subprocess.Popen]) -> None:
    """Each node's whole process group (agent, rank, data loader workers), by its own id."""
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    for proc in procs:  # the ranks and loader workers of an agent that ended by itself
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def two_node_run(tmp_path_factory) -> tuple[Path, Path, float]:
    """(shared working directory, the run folder, wall seconds) of the two-node run."""
    if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
        pytest.skip("needs torch.distributed with the gloo backend")
    root = tmp_path_factory.mktemp("multinode")
    shared = root / "shared"
    shared.mkdir()
    port = free_port()
    started = time.monotonic()
    procs = [start_node(node, port, shared, root / f"node{node}.log") for node in (0, 1)]
    try:
        codes = wait_all(procs, TIMEOUT_S)
    finally:
        stop(procs)
    wall = time.monotonic() - started
    logs = "\n".join(f"--- node {n}:\n{(root / f'node{n}.log').read_text()[-3000:]}" for n in (0, 1))
    assert codes == [0, 0], f"exit codes {codes} after {wall:.0f} s\n{logs}"
    runs = sorted((shared / "outputs").iterdir())
    assert [run.name for run in runs] == [f"torchrun-{RDZV_ID}"], f"one run folder, named by the job: {runs}"
    return shared, runs[0], wall


def test_both_ranks_use_one_folder_and_rank_zero_writes_the_run(two_node_run):
    shared, run, wall = two_node_run
    print(f"two-node run: {wall:.1f} s")
    stray = [p for p in files_under(shared) if not p.is_relative_to(run)]
    assert stray == [], "no rank wrote outside the run folder"
    names = {p.relative_to(run).as_posix() for p in files_under(run)}
    for expected in (".hydra/config.yaml", "metrics.json", "history.json", "classification_report.csv",
                     "confusion_matrix.png", "predictions.csv", "train.log", "train_rank1.log"):  # fmt: skip
        assert expected in names, expected
    assert not any(name.startswith(".hydra") and "rank" in name for name in names)

    rank0_log, rank1_log = (run / "train.log").read_text(), (run / "train_rank1.log").read_text()
    assert rank0_log.count("DigitsDataModule: 10 classes") == 1, "rank 1 logged into rank 0's log"
    assert rank1_log.count("DigitsDataModule: 10 classes") == 1
    assert rank0_log.count("metrics written to") == 1 and "metrics written" not in rank1_log

    metrics = read_json(run / "metrics.json")
    assert metrics["epochs_run"] == 2 and [row["epoch"] for row in read_json(run / "history.json")] == [0, 1]
    assert Path(metrics["best_checkpoint"]).parent == run / "checkpoints"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [Path(metrics["best_checkpoint"]).name,
                                                                        "last.ckpt"]  # fmt: skip
    assert metrics["report"]["samples"] == TEST_IMAGES  # every test image once, gathered from both ranks


def test_synced_test_figures_equal_one_process_evaluating_the_best_checkpoint(two_node_run, tmp_path):
    _, run, _ = two_node_run
    metrics = read_json(run / "metrics.json")
    out = tmp_path / "evaluate"
    command = [
        *(sys.executable, "-m", "lightning_resnet.evaluate", f"ckpt_path={metrics['best_checkpoint']}"),
        *(SPLIT, "data.batch_size=32", "callbacks.progress_bar.refresh_rate=0", f"hydra.run.dir={out}"),
    ]
    result = subprocess.run(command, env=outside_any_launch(os.environ), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    single = read_json(out / "metrics.json")
    assert single["report"]["samples"] == TEST_IMAGES
    assert set(single["test"]) == set(metrics["test"]) and single["test"]
    for name, value in single["test"].items():
        assert metrics["test"][name] == pytest.approx(value, abs=TOLERANCE), name
    assert (out / "classification_report.csv").read_text() == (run / "classification_report.csv").read_text()
    print(json.dumps({"ddp": metrics["test"], "single": single["test"]}))
