"""launcher=ray end to end, against a real Ray head that this module starts on loopback and stops.

The head is `ray start --head --node-ip-address=127.0.0.1` in a session of its own, with Ray's
single-machine switch (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`; without it Ray replaces 127.0.0.1 by the
machine's outward address and listens on every interface). Every process the head starts, daemons and
job workers alike, stays in that session: that is how the tests find a job's worker and how the fixture
stops exactly this head, never anyone else's Ray (no `ray stop`). The sweeps run through the real CLI,
`python -m lightning_resnet -m launcher=ray hydra.launcher.ray.init.address=127.0.0.1:<port>`.
"""

from __future__ import annotations

import contextlib
import csv
import ipaddress
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import compose_config, read_json, require_extra, require_tool

# Under xdist each worker that runs tests of this module starts a head of its own (`ray_head` is module-scoped).
pytestmark = [pytest.mark.engines, pytest.mark.slow]
require_extra("ray", "ray")

REPO = Path(__file__).resolve().parents[1]
LOCAL_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # Ray's switch: 0 keeps a loopback node on loopback
SS = "apt-get install -y --no-install-recommends iproute2"
# One CPU per job (two jobs at once on the head's two), 32 px digits, a few batches per epoch.
JOB = [
    "hydra.launcher.ray.remote.num_cpus=1",
    "data.image_size=32",
    "data.batch_size=32",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "callbacks.progress_bar.refresh_rate=0",
    "callbacks.reports=null",
    "trainer.enable_model_summary=false",
]


@dataclass
class RayHead:
    address: str  # 127.0.0.1:<port>, what the sweeps join
    port: int
    session: int  # the session id of `ray start`, kept by every process of this head
    auth: dict[str, str]  # Ray's token authentication: what a driver needs in its environment

    def pids(self) -> list[int]:
        return session_pids(self.session)


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 now, from the kernel's ephemeral range (outside Ray's worker ports 10002-19999)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def session_pids(session: int) -> list[int]:
    """Live (not zombie) processes of the session."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[3]) == session:  # state, ppid, pgrp, session
            pids.append(int(stat.parent.name))
    return pids


def stop_session(session: int, grace_s: float = 3.0) -> None:
    """SIGTERM to every process of the session, SIGKILL to what is left after `grace_s` (Ray's GCS and
    autoscaler monitor ignore SIGTERM for longer than a test should wait)."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        for pid in session_pids(session):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while session_pids(session) and time.monotonic() < deadline:
            time.sleep(0.1)
    assert not session_pids(session), f"processes of the Ray head outlived SIGKILL: {session_pids(session)}"


@pytest.fixture(scope="module")
def ray_head() -> Iterator[RayHead]:
    temp_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: Ray's socket paths must fit 107 chars
    port, client_port, agent_port, dashboard_port = free_ports(4)
    token = temp_dir / "auth_token"  # this head's own token: ~/.ray/auth_token is neither read nor written
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    command = [
        sys.executable, "-m", "ray.scripts.scripts", "start", "--head",
        "--node-ip-address=127.0.0.1", f"--port={port}", f"--ray-client-server-port={client_port}",
        f"--dashboard-agent-listen-port={agent_port}", f"--dashboard-port={dashboard_port}",
        "--include-dashboard=false", "--dashboard-host=127.0.0.1", "--num-cpus=2", "--num-gpus=0",
        "--object-store-memory=100000000", "--disable-usage-stats", f"--temp-dir={temp_dir}",
    ]  # fmt: skip
    env = {**os.environ, LOCAL_ONLY: "0", **auth}
    start = subprocess.Popen(
        command, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        output, _ = start.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        output = "(no answer in 120 s)"
    head = RayHead(address=f"127.0.0.1:{port}", port=port, session=start.pid, auth=auth)
    try:
        if start.returncode != 0:
            pytest.fail(f"`ray start --head` failed:\n{output[-3000:]}")
        yield head
    finally:
        stop_session(head.session)
        shutil.rmtree(temp_dir, ignore_errors=True)


def sweep_command(head: RayHead, *overrides: str) -> list[str]:
    return [
        sys.executable, "-m", "lightning_resnet", "-m", "launcher=ray",
        f"hydra.launcher.ray.init.address={head.address}", *JOB, *overrides,
    ]  # fmt: skip


def start_sweep(cwd: Path, head: RayHead, *overrides: str) -> tuple[subprocess.Popen, Path]:
    """The driver in a session of its own (so a hung one is stopped with what it started); its output in a file."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env.pop(LOCAL_ONLY, None)  # the launcher sets it for a loopback address: part of what is tested
    env.update(head.auth)
    log = cwd / f"driver-{time.monotonic_ns()}.log"
    with log.open("w") as out:
        driver = subprocess.Popen(
            sweep_command(head, *overrides), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    return driver, log


def finish(driver: subprocess.Popen, log: Path, timeout: float = 300) -> str:
    """Wait for the driver; one that does not return in `timeout` is a hang: stopped, and the test fails."""
    try:
        driver.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_session(driver.pid)
        pytest.fail(f"the sweep driver did not return within {timeout} s:\n{log.read_text()[-3000:]}")
    return log.read_text()


def run_sweep(cwd: Path, head: RayHead, *overrides: str) -> tuple[int, str]:
    driver, log = start_sweep(cwd, head, *overrides)
    output = finish(driver, log)
    return driver.returncode, output


def summary_rows(sweep: Path) -> dict[str, dict[str, str]]:
    with (sweep / "summary.csv").open() as file:
        return {row["job"]: row for row in csv.DictReader(file)}


def is_loopback(host: str) -> bool:
    """`127.0.0.1`, `[::ffff:127.0.0.1]`, `[::1]`, `127.0.0.53%lo`: yes; `*`, `0.0.0.0`, `[::]`, others: no."""
    host = host.strip("[]").split("%")[0]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # `*`: every interface
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def listening(pids: list[int]) -> list[tuple[str, int, int]]:
    """(local host, port, pid) of every listening TCP and bound UDP socket of `pids`, from `ss`."""
    ss = require_tool("ss", SS)
    table = subprocess.run([ss, "-Hltnup"], capture_output=True, text=True, check=True).stdout
    wanted, found = set(pids), []
    for line in table.splitlines():  # netid state recv-q send-q local peer users:(("name",pid=N,fd=M),...)
        fields = line.split(maxsplit=6)
        if len(fields) < 7:
            continue
        host, _, port = fields[4].rpartition(":")
        for pid in map(int, re.findall(r"pid=(\d+),", fields[6])):  # names may hold spaces: "ray::job 0: seed=1"
            if pid in wanted:
                found.append((host, int(port), pid))
    return found


def job_worker(head: RayHead, job_dir: Path) -> int:
    """The Ray worker process running the job: of the head's processes, the one holding the job's
    `.run.lock` open whose parent does not (DataLoader workers forked from it hold it too)."""
    lock = str(job_dir / ".run.lock")
    holders: dict[int, int] = {}
    for pid in head.pids():
        try:
            if any(os.readlink(fd) == lock for fd in Path(f"/proc/{pid}/fd").iterdir()):
                holders[pid] = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
    tops = [pid for pid, parent in holders.items() if parent not in holders]
    assert len(tops) == 1, f"expected one Ray worker holding {lock}, found {holders}"
    return tops[0]


def test_a_job_lost_before_hydra_wrote_its_folder_is_reported_failed(tmp_path):
    """The driver's record of a lost job (no Ray needed to build one): status.json, the .hydra files the
    report lists jobs by, and a NaN result; a final status the job wrote itself after submission stays."""
    from ray.exceptions import WorkerCrashedError

    from hydra_plugins.lightning_resnet_launchers.ray_job import describe
    from lightning_resnet.sweeps.status import lost_job_return
    from lightning_resnet.sweeps.summary import write_summary

    sweep = tmp_path / "sweep"
    config = compose_config(tmp_path / "unused", ["seed=1"], return_hydra_config=True)
    ret = lost_job_return(config, sweep / "seed=1", describe(WorkerCrashedError()), since=time.time())
    assert math.isnan(ret.return_value) and ret.hydra_cfg.hydra.runtime.output_dir == str(sweep / "seed=1")
    write_summary(sweep)
    row = summary_rows(sweep)["seed=1"]
    assert row["status"] == "failed" and row["error"].startswith("WorkerCrashedError: The worker died"), row

    own = {"status": "ok", "best_score": 0.5, "ended": time.time() + 1}
    (sweep / "seed=1" / "status.json").write_text(json.dumps(own))
    lost_job_return(config, sweep / "seed=1", describe(WorkerCrashedError()), since=time.time())
    assert read_json(sweep / "seed=1" / "status.json") == own  # died after writing its result: kept


def test_ray_head_listens_on_loopback_only(ray_head):
    require_tool("ss", SS)
    sockets = listening(ray_head.pids())
    assert any(port == ray_head.port for _, port, _ in sockets), sockets  # the GCS, where sweeps connect
    assert all(is_loopback(host) for host, _, _ in sockets), sockets


def test_an_address_where_no_head_answers_fails_at_once_naming_the_key(tmp_path):
    nowhere = RayHead(address=f"127.0.0.1:{free_ports(1)[0]}", port=0, session=-1, auth={})
    started = time.monotonic()
    code, output = run_sweep(tmp_path, nowhere, "seed=1,2", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert code != 0 and f"hydra.launcher.ray.init.address={nowhere.address}: no Ray head answers" in output
    assert time.monotonic() - started < 120  # ray.init alone would retry for minutes


def test_a_driver_without_the_clusters_token_is_told_how_to_send_it(tmp_path, ray_head):
    tokenless = RayHead(ray_head.address, ray_head.port, ray_head.session, auth={"RAY_AUTH_MODE": "disabled"})
    code, output = run_sweep(tmp_path, tokenless, "seed=1,2", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert code != 0 and "uses Ray's token authentication" in output and "RAY_AUTH_MODE=token" in output, output[-3000:]
    assert output.count("Failed to get cluster ID") <= 1, output[-3000:]  # refused once, not retried by ray.init


def test_jobs_no_node_can_hold_stop_the_sweep_naming_the_key(tmp_path, ray_head):
    sweep = tmp_path / "sweep"
    code, output = run_sweep(
        tmp_path, ray_head, "seed=1,2", "hydra.launcher.ray.remote.num_cpus=3", f"hydra.sweep.dir={sweep}"
    )
    assert code != 0 and "hydra.launcher.ray.remote: each job asks for {'CPU': 3, 'GPU': 0}" in output, output[-3000:]
    assert not list(sweep.glob("seed=*"))  # refused before any job started (Ray would keep them pending forever)


def test_sweep_runs_each_job_as_a_ray_task_records_a_failing_one_and_writes_the_summary(tmp_path, ray_head):
    """Three jobs on the head's two CPUs: two train at once, the third (a bad learning rate) fails in its turn."""
    sweep = tmp_path / "sweep"
    code, output = run_sweep(tmp_path, ray_head, "optimizer.lr=0.01,0.02,-1", f"hydra.sweep.dir={sweep}")
    assert code == 0, output[-3000:]  # as with the basic launcher: a failed job is reported, not raised
    rows = summary_rows(sweep)
    assert set(rows) == {"optimizer.lr=0.01", "optimizer.lr=0.02", "optimizer.lr=-1"}
    status = {job: read_json(sweep / job / "status.json") for job in rows}
    for job in rows:
        job_id = yaml.safe_load((sweep / job / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["id"]
        assert re.fullmatch(r"[0-9a-f]{16,}", job_id), job_id  # the Ray task's id, set in the worker
    failed = rows.pop("optimizer.lr=-1")
    assert failed["status"] == status["optimizer.lr=-1"]["status"] == "failed"
    assert "Invalid learning rate" in failed["error"]
    for job, row in rows.items():
        assert row["status"] == status[job]["status"] == "ok", (job, row, status[job])
        assert read_json(sweep / job / "metrics.json")["test"]["test/acc"] > 0
    trained = [status[job] for job in rows]
    assert max(s["started"] for s in trained) < min(s["ended"] for s in trained)  # at once
    assert (sweep / "summary.md").is_file() and (sweep / "summary.png").is_file()


def test_killed_worker_is_recorded_failed_and_resume_finishes_it_from_last_ckpt(tmp_path, ray_head):
    require_tool("ss", SS)
    epochs = 6
    sweep = tmp_path / "sweep"
    args = ["seed=1,2", f"trainer.max_epochs={epochs}", f"hydra.sweep.dir={sweep}"]
    victim, other = sweep / "seed=1", sweep / "seed=2"
    last = victim / "checkpoints" / "last.ckpt"

    driver, log = start_sweep(tmp_path, ray_head, *args)
    try:
        deadline = time.monotonic() + 240
        while not last.is_file() and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert last.is_file(), f"no {last} within 240 s:\n{log.read_text()[-3000:]}"
        worker = job_worker(ray_head, victim)
        sockets = listening([*ray_head.pids(), driver.pid])  # the jobs' workers and the driver included
        os.kill(worker, signal.SIGKILL)
        killed_at = time.time()
        output = finish(driver, log)
    finally:
        if driver.poll() is None:
            stop_session(driver.pid)
    assert {worker, driver.pid} <= {pid for _, _, pid in sockets}, (worker, driver.pid, sockets)
    assert all(is_loopback(host) for host, _, _ in sockets), sockets

    assert driver.returncode == 0, output[-3000:]
    status = read_json(victim / "status.json")
    assert status["status"] == "failed" and status["error"].startswith("WorkerCrashedError"), status
    assert status["ended"] - killed_at < 30  # noticed when the worker died, not after some timeout
    assert not (victim / "metrics.json").exists()  # it was killed mid-run
    assert read_json(other / "status.json")["status"] == "ok"  # the other job went on
    rows = summary_rows(sweep)
    assert rows["seed=1"]["status"] == "failed" and rows["seed=2"]["status"] == "ok"
    finished = (other / "metrics.json").read_text()

    code, output = run_sweep(tmp_path, ray_head, *args, "resume=true")
    assert code == 0, output[-3000:]
    resumed = read_json(victim / "metrics.json")
    assert resumed["resumed_from"] == str(last) and resumed["epochs_run"] == epochs
    assert [row["epoch"] for row in read_json(victim / "history.json")] == list(range(epochs))  # none lost or repeated
    assert read_json(victim / "status.json")["status"] == "ok"
    assert (other / "metrics.json").read_text() == finished  # finished before: skipped
    assert summary_rows(sweep)["seed=1"]["status"] == "ok"
