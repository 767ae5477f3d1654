"""`launcher=slurm` on a real SLURM cluster that `scripts/slurm-local.sh` brings up on this machine.

The cluster (munged, MariaDB + slurmdbd, slurmctld, slurmd on 127.0.0.1) lives in a temp folder for the
session, or in `$SLURM_LOCAL_DIR` when that names one (CI, or `make slurm-up` before the tests); it is
brought down at the end only if these tests started it. Sweeps run as `python -m lightning_resnet -m
launcher=slurm ...` processes whose jobs are SLURM jobs (submitit), on CPU with tiny settings.
"""

from __future__ import annotations

import csv
import fcntl
import math
import os
import random
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import pytest
from omegaconf import OmegaConf

from tests.conftest import compose_config, read_json, require_extra, require_tool

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "slurm-local.sh"
INSTALL = "apt-get install -y slurm-wlm slurmdbd mariadb-server munge"

# What every sweep here asks SLURM for: one CPU and 2 GB per task, CPU training, the script's partition.
# timeout_min: submitit counts a signal in the last 10 minutes of the limit as a time-out, not preemption.
SLURM = [
    "launcher=slurm",
    "hydra.launcher.partition=local",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=2",
    "hydra.launcher.timeout_min=30",
    "trainer.accelerator=cpu",
]
TINY = ["data.image_size=32", "data.batch_size=32", "callbacks.progress_bar.refresh_rate=0"]
TINY += ["trainer.enable_model_summary=false", "trainer.limit_test_batches=1"]
# One tiny epoch per job: 32 px digits, 2 train batches, 1 val and 1 test batch (as tests/test_sweeps.py).
QUICK = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", *TINY]
NO_REPORTS = ["callbacks.reports=null"]


# -- the cluster -----------------------------------------------------------------------------------
def free_port_base(count: int = 4) -> int:
    """The first of `count` consecutive ports free on 127.0.0.1 (the script's slurmctld, slurmd, slurmdbd, MariaDB)."""
    for _ in range(200):
        base = random.randrange(20000, 60000)
        sockets = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no 4 consecutive free ports on 127.0.0.1")


@contextmanager
def locked(path: Path) -> Iterator[None]:
    with path.open("a") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        yield


def script(command: str, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), command], env=env, capture_output=True, text=True, timeout=timeout)


@contextmanager
def shared_cluster(folder: Path, free_ports: bool) -> Iterator[dict[str, str]]:
    """The cluster in `folder`, up for as long as a test process of this session uses it.

    `pytest -n 2` may run this module's tests in both workers: they share the folder, counted under a
    lock, and the last one out brings the cluster down, if a worker of this session brought it up.
    `free_ports`: a new folder gets 4 free ports, not the script's default ones (a cluster of `make slurm-up`).
    """
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SLURM_LOCAL_DIR": str(folder)}
    if free_ports:  # read by the script only when it first sets the folder up
        env["SLURM_LOCAL_PORT"] = str(free_port_base())
    users, owner = folder / ".pytest-users", folder / ".pytest-started-it"
    with locked(folder / ".pytest-lock"):
        count = int(users.read_text() or 0) if users.exists() else 0
        if count == 0:
            owner.write_text("yes" if script("status", env).returncode != 0 else "no")
        started = time.monotonic()
        up = script("up", env)
        assert up.returncode == 0, f"scripts/slurm-local.sh up failed:\n{up.stderr}"
        print(f"slurm-local.sh up: {time.monotonic() - started:.1f} s\n{up.stderr}")
        users.write_text(str(count + 1))
    try:
        yield {**env, "SLURM_CONF": str(folder / "etc" / "slurm.conf"), "PYTHONPATH": str(REPO)}
    finally:
        with locked(folder / ".pytest-lock"):
            count = int(users.read_text()) - 1
            users.write_text(str(count))
            if count == 0 and owner.read_text() == "yes":
                down = script("down", env)
                assert down.returncode == 0, down.stderr
                assert script("down", env).returncode == 0  # nothing running: still fine
                assert script("status", env).returncode != 0


class Cluster(NamedTuple):
    env: dict[str, str]  # a shell's after `eval "$(scripts/slurm-local.sh env)"`


@pytest.fixture(scope="module")
def slurm(tmp_path_factory) -> Iterator[Cluster]:
    """The cluster, up; the environment a sweep on it needs."""
    for daemon in ("slurmctld", "slurmd", "slurmdbd", "mariadbd", "munged"):
        require_tool(daemon, INSTALL)
    require_extra("hydra_plugins.hydra_submitit_launcher", "sweeps")
    own = not os.environ.get("SLURM_LOCAL_DIR")
    if own:  # xdist workers share the session's base folder
        base = tmp_path_factory.getbasetemp()
        folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "slurm-local"
    else:
        folder = Path(os.environ["SLURM_LOCAL_DIR"])
    with shared_cluster(folder, free_ports=own) as env:
        yield Cluster(env)


# -- helpers ---------------------------------------------------------------------------------------
def sweep_command(cluster: Cluster, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "lightning_resnet", "-m", *SLURM, *overrides]


def run_sweep(cwd: Path, cluster: Cluster, *overrides: str, timeout: int = 600) -> subprocess.CompletedProcess:
    command = sweep_command(cluster, *overrides)
    result = subprocess.run(command, cwd=cwd, env=cluster.env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def start_sweep(cwd: Path, cluster: Cluster, *overrides: str) -> subprocess.Popen:
    command = sweep_command(cluster, *overrides)
    return subprocess.Popen(
        command, cwd=cwd, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def slurm_job_ids(sweep: Path) -> list[str]:
    """The SLURM job ids of a sweep's jobs (`123` for one job, `123_0`, `123_1`, ... for an array), from
    the folders submitit keeps per job."""
    folders = (sweep / ".submitit").iterdir()
    return sorted(f.name for f in folders if re.fullmatch(r"\d+(_\d+)?", f.name) and list(f.glob("*_submitted.pkl")))


def sacct(env: dict[str, str], job: str, fields: str, *options: str) -> list[list[str]]:
    listed = subprocess.run(
        ["sacct", "-n", "-P", "-j", job, "-o", fields, *options], env=env, capture_output=True, text=True, check=True
    )
    return [line.split("|") for line in listed.stdout.splitlines()]


def wait_for(condition: Callable[[], object], what: str, timeout: float = 120, every: float = 0.2) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def final_states(env: dict[str, str], array: str, count: int) -> dict[str, str]:
    """JobID -> State of the array's tasks once accounting records all `count` as ended."""

    def ended() -> dict[str, str] | None:
        states = {row[0]: row[1] for row in sacct(env, array, "JobID,State", "-X")}
        done = len(states) == count and all(s not in ("PENDING", "RUNNING", "COMPLETING") for s in states.values())
        return states if done else None

    return wait_for(ended, f"sacct to record the {count} jobs of {array} as ended", timeout=60, every=1)


def summary_rows(sweep: Path) -> dict[str, dict[str, str]]:
    with (sweep / "summary.csv").open() as file:
        return {row["job"]: row for row in csv.DictReader(file)}


def close(text: str, value: float | None) -> bool:
    return value is not None and math.isclose(float(text), value, rel_tol=1e-9)


# -- the config, without a cluster -----------------------------------------------------------------
def test_slurm_launcher_asks_for_gpus_only_when_training_on_gpus(tmp_path):
    require_extra("hydra_plugins.hydra_submitit_launcher", "sweeps")  # its config composes only when installed

    def launcher(*overrides: str):
        return compose_config(tmp_path, ["launcher=slurm", *overrides], return_hydra_config=True)

    cpu = launcher("trainer=cpu")
    assert cpu.hydra.launcher._target_ == "hydra_plugins.lightning_resnet_launchers.slurm_launcher.SlurmLauncher"
    assert cpu.hydra.launcher.gpus_per_node is None and cpu.hydra.launcher.tasks_per_node == 1
    ddp = launcher("trainer=ddp", "trainer.devices=4", "++trainer.num_nodes=2")
    assert (ddp.hydra.launcher.gpus_per_node, ddp.hydra.launcher.tasks_per_node, ddp.hydra.launcher.nodes) == (4, 4, 2)
    assert launcher().hydra.launcher.gpus_per_node == 1  # accelerator auto: a GPU partition is assumed
    sim = launcher("trainer=ddp_sim")
    assert sim.hydra.launcher.gpus_per_node is None and sim.hydra.launcher.tasks_per_node == 2
    # A requeued job continues from its last.ckpt; Lightning's own SLURM requeue handler is off (submitit's
    # is the one), and the rest of trainer.plugins is trainer/default.yaml's.
    assert cpu.resume is True
    default_plugins = OmegaConf.to_container(compose_config(tmp_path, ["trainer=cpu"]).trainer.plugins)
    slurm_plugins = OmegaConf.to_container(cpu.trainer.plugins)
    assert slurm_plugins[:-1] == default_plugins, "conf/launcher/slurm.yaml: trainer.plugins must repeat the default's"
    assert slurm_plugins[-1]["_target_"].endswith("SLURMEnvironment") and slurm_plugins[-1]["auto_requeue"] is False


# -- the cluster script ----------------------------------------------------------------------------
@pytest.mark.engines
@pytest.mark.slow
def test_cluster_script_is_idempotent_and_listens_on_loopback_only(slurm):
    ss = require_tool("ss", "apt-get install -y iproute2")
    again = script("up", slurm.env)
    assert again.returncode == 0 and again.stderr.count("already running") == 5, again.stderr
    status = script("status", slurm.env)
    assert status.returncode == 0 and re.search(r"\b(idle|mixed|allocated)\b", status.stdout), status.stdout
    run = Path(slurm.env["SLURM_LOCAL_DIR"]) / "run"
    pids = [(run / f"{daemon}.pid").read_text().strip() for daemon in ("slurmctld", "slurmd", "slurmdbd", "mariadbd")]
    listening = subprocess.run([ss, "-Htlnp"], capture_output=True, text=True, check=True).stdout.splitlines()
    ours = [line for line in listening if any(f"pid={pid}," in line for pid in pids)]
    assert len(ours) >= 4, listening  # each daemon listens on its port
    addresses = {line.split()[3].rsplit(":", 1)[0] for line in ours}
    assert all(a.startswith("127.") for a in addresses), ours


# -- sweeps through launcher=slurm -----------------------------------------------------------------
@pytest.mark.engines
@pytest.mark.slow
def test_two_job_sweep_runs_as_a_slurm_array_with_the_local_launchers_files(tmp_path, slurm):
    sweep = tmp_path / "sweep"
    run_sweep(tmp_path, slurm, "optimizer=adam,sgd", *QUICK, f"hydra.sweep.dir={sweep}")

    ids = slurm_job_ids(sweep)
    assert len(ids) == 2 and len({i.split("_")[0] for i in ids}) == 1, ids  # one array of 2 SLURM jobs
    states = final_states(slurm.env, ids[0].split("_")[0], 2)
    assert set(states) == set(ids) and set(states.values()) == {"COMPLETED"}, states

    # As tests/test_sweeps.py asserts for the basic launcher: folders, status, summary = each job's metrics.
    jobs = sorted(p.name for p in sweep.iterdir() if (p / ".hydra").is_dir())
    assert jobs == ["optimizer=adam", "optimizer=sgd"]  # named by the swept key, as the local launcher names them
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()
    rows = summary_rows(sweep)
    assert set(rows) == set(jobs)
    for job, row in rows.items():
        metrics = read_json(sweep / job / "metrics.json")
        assert read_json(sweep / job / "status.json")["status"] == "ok"
        assert row["status"] == "ok" and int(row["epochs"]) == metrics["epochs_run"] == 1
        assert close(row["best_val_acc"], metrics["best"]["val/acc"]) and close(row["score"], metrics["best_score"])
        assert close(row["test_acc"], metrics["test"]["test/acc"]) and close(row["test_f1"], metrics["test"]["test/f1"])
        assert close(row["silhouette"], metrics["report"]["silhouette"])
        assert int(row["params"]) == metrics["model"]["params_total"]
        assert list((sweep / job / "tensorboard").glob("events.out.tfevents.*"))
    scores = [float(row["score"]) for row in rows.values()]
    assert scores == sorted(scores, reverse=True)
    assert (sweep / "summary.md").is_file() and (sweep / "summary.png").stat().st_size > 10_000


@pytest.mark.engines
@pytest.mark.slow
def test_failed_and_cancelled_slurm_jobs_are_recorded_failed_and_the_sweep_ends(tmp_path, slurm):
    """A job cancelled while it runs (as for a job killed for memory or a lost node) is `failed` with SLURM's
    state. One cancelled before it started, beside other pending tasks of the array, is never accounted
    (SLURM drops it): `failed` as forgotten, where submitit alone would wait for it forever. A job whose
    training raises is `failed` with its error. The other jobs finish and the summary is written."""
    sweep = tmp_path / "sweep"
    overrides = ["optimizer.lr=0.001,0.002,0.003,0.004,-1", "trainer.max_epochs=3", "trainer.limit_train_batches=4"]
    driver = start_sweep(
        tmp_path,
        slurm,
        *overrides,
        "trainer.limit_val_batches=1",
        "slurm_forgotten_after_s=6",
        *TINY,
        *NO_REPORTS,
        f"hydra.sweep.dir={sweep}",
    )
    try:
        # Once training: before, submitit's handler ignores the SIGTERM of scancel (SIGKILL ends it KillWait later).
        last = sweep / "optimizer.lr=0.002" / "checkpoints" / "last.ckpt"
        wait_for(last.is_file, "job 1 to train an epoch", timeout=300)
        array = slurm_job_ids(sweep)[0].split("_")[0]
        subprocess.run(["scancel", f"{array}_2"], env=slurm.env, check=True)  # pending with _3, _4: 2 CPUs, 2 jobs run
        subprocess.run(["scancel", f"{array}_1"], env=slurm.env, check=True)
        output, _ = driver.communicate(timeout=600)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, output[-4000:]
    rows = summary_rows(sweep)
    for job in ("optimizer.lr=0.001", "optimizer.lr=0.004"):
        assert rows[job]["status"] == "ok" and read_json(sweep / job / "metrics.json")["epochs_run"] == 3
    cancelled, forgotten = rows["optimizer.lr=0.002"], rows["optimizer.lr=0.003"]
    assert cancelled["status"] == "failed" and cancelled["error"].startswith(f"SLURM job {array}_1 ended CANCELLED")
    assert forgotten["status"] == "failed", forgotten
    assert forgotten["error"].startswith(f"SLURM job {array}_2 ended without a record"), forgotten["error"]
    raised = rows["optimizer.lr=-1"]
    assert raised["status"] == "failed" and "Invalid learning rate" in raised["error"], raised
    assert read_json(sweep / "optimizer.lr=-1" / "status.json")["status"] == "failed"


@pytest.mark.engines
@pytest.mark.slow
def test_a_sweep_asking_more_than_the_cluster_has_stops_at_once_with_sbatchs_reason(tmp_path, slurm):
    sweep = tmp_path / "sweep"
    command = sweep_command(slurm, "hydra.launcher.cpus_per_task=64", *QUICK, f"hydra.sweep.dir={sweep}")
    result = subprocess.run(command, cwd=tmp_path, env=slurm.env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert (
        "Batch job submission failed: More processors requested than permitted"
        in result.stderr.strip().splitlines()[-1]
    )


@pytest.mark.engines
@pytest.mark.slow
def test_preempted_job_is_requeued_and_continues_from_its_checkpoint(tmp_path, slurm):
    """Preempted twice: with submitit's signal (USR2: it requeues the job, which continues from the last
    completed epoch), then by a plain `scontrol requeue` (SIGTERM, as a preemption without the signal:
    LastCheckpoint saves the state mid-epoch). Every epoch ends up in the history exactly once."""
    epochs = 4  # signalled in epoch 1 and (after the requeued run saved epoch 1) in epoch 2
    sweep = tmp_path / "sweep"
    overrides = [f"trainer.max_epochs={epochs}", "trainer.limit_train_batches=4", "trainer.limit_val_batches=1"]
    overrides += [*TINY, *NO_REPORTS, f"hydra.sweep.dir={sweep}"]
    driver = start_sweep(tmp_path, slurm, *overrides)
    try:
        job_dir, last = sweep / "0", sweep / "0" / "checkpoints" / "last.ckpt"
        wait_for(last.is_file, "the job's first last.ckpt", timeout=300)
        (job,) = slurm_job_ids(sweep)
        subprocess.run(["scancel", "--signal=USR2", job], env=slurm.env, check=True)  # the steps, not the batch shell

        log = job_dir / "train.log"
        wait_for(lambda: log.read_text().count("resume=true: continuing") == 1, "the requeued job to resume", 300)
        resumed_at = last.stat().st_mtime
        wait_for(lambda: last.stat().st_mtime > resumed_at, "an epoch of the requeued job", timeout=300)
        subprocess.run(["scontrol", "requeue", job], env=slurm.env, check=True)
        output, _ = driver.communicate(timeout=600)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, output[-4000:]

    history = read_json(job_dir / "history.json")
    assert [row["epoch"] for row in history] == list(range(epochs))  # nothing lost, nothing repeated
    metrics = read_json(job_dir / "metrics.json")
    assert metrics["epochs_run"] == epochs and metrics["resumed_from"] == str(last)
    assert read_json(job_dir / "status.json")["status"] == "ok" and summary_rows(sweep)["0"]["status"] == "ok"
    text = log.read_text()
    assert text.count("resume=true: continuing") == 2 and "SIGTERM: state at epoch" in text
    assert re.search(r"epoch \d+/\d+", text.rsplit("resume=true: continuing", 1)[1])  # the last run trained
    final_states(slurm.env, job, 1)
    runs = [row[1] for row in sacct(slurm.env, job, "JobID,State", "-X", "--duplicates")]
    assert runs == ["REQUEUED", "REQUEUED", "COMPLETED"], runs  # the same SLURM job, run three times


@pytest.mark.engines
@pytest.mark.slow
def test_ddp_job_gets_its_two_ranks_from_slurm_and_trains_once(tmp_path, slurm):
    sweep = tmp_path / "sweep"
    overrides = ["trainer=ddp_sim", "trainer.max_epochs=2", "trainer.limit_train_batches=2"]
    overrides += ["trainer.limit_val_batches=1", *TINY, *NO_REPORTS, f"hydra.sweep.dir={sweep}"]
    run_sweep(tmp_path, slurm, *overrides)  # tasks_per_node follows trainer.devices (2)

    (job,) = slurm_job_ids(sweep)
    final_states(slurm.env, job, 1)
    steps = {row[0]: row[1] for row in sacct(slurm.env, job, "JobID,NTasks")}
    assert steps.get(f"{job}.0") == "2", steps  # one srun step of 2 tasks: SLURM started both ranks
    logs = sweep / ".submitit" / job
    for rank in (0, 1):  # each task joined the same 2-process group: Lightning spawned nothing
        output = "".join(p.read_text() for p in logs.glob(f"{job}_{rank}_log.*"))  # Lightning logs to Hydra's console
        assert f"GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/2" in output
    assert not any("ranks run in a child process" in p.read_text() for p in logs.glob("*_log.*"))

    jobs = [p.name for p in sweep.iterdir() if (p / ".hydra").is_dir()]
    assert jobs == ["0"] and not (tmp_path / "outputs").exists()  # both ranks in one folder
    metrics = read_json(sweep / "0" / "metrics.json")
    assert metrics["epochs_run"] == 2 and metrics["test"]["test/acc"] > 0
    assert [row["epoch"] for row in read_json(sweep / "0" / "history.json")] == [0, 1]
    assert read_json(sweep / "0" / "status.json")["status"] == "ok" and summary_rows(sweep)["0"]["status"] == "ok"
