"""Sweeps: folder layout, device slots, the report, faults and resume, launchers, DDP, Optuna, k-fold."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from omegaconf import OmegaConf

from lightning_resnet.builders import build_datamodule
from lightning_resnet.sweeps import jobs, layout, plugins
from lightning_resnet.sweeps.devices import claim_slot, parallel_slots
from lightning_resnet.sweeps.summary import write_summary
from lightning_resnet.tasks.train import run
from lightning_resnet.train import cli
from tests.conftest import compose_config, read_json, require_extra
from tests.miniature import write_image, write_job_folder

# One tiny epoch per job: 32 px digits, 2 train batches, 1 val and 1 test batch.
QUICK = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "data.batch_size=32",
    "callbacks.progress_bar.refresh_rate=0",
    "trainer.enable_model_summary=false",
]
NO_REPORTS = ["callbacks.reports=null"]


def run_cli(cwd: Path, *overrides: str, multirun: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "lightning_resnet", *(["-m"] if multirun else []), *overrides]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def summary_rows(sweep: Path) -> dict[str, dict[str, str]]:
    with (sweep / "summary.csv").open() as file:
        return {row["job"]: row for row in csv.DictReader(file)}


def close(text: str, value: float | None) -> bool:
    return value is not None and math.isclose(float(text), value, rel_tol=1e-9)


# -- layout ----------------------------------------------------------------------------------------
def test_job_folder_names_come_from_overrides():
    assert layout.job_dirname("model=resnet34,optimizer=sgd", 3) == "model=resnet34,optimizer=sgd"
    assert layout.job_dirname("data.root=/data/x y", 0) == "data.root=-data-x-y"
    assert layout.job_dirname("", 7) == "7"
    long = layout.job_dirname("a=" + "x" * 300, 0)
    assert len(long) == layout.MAX_NAME and long != layout.job_dirname("a=" + "x" * 299 + "y", 0)


def test_two_sweeps_started_in_the_same_second_get_their_own_folders(tmp_path, monkeypatch):
    base = str(tmp_path / "multirun" / "2026-01-01" / "10-00-00")
    first = layout.fresh_dir(base)
    assert layout.fresh_dir(base) == first  # resolved again within the sweep: the same folder
    monkeypatch.setattr(layout, "_claimed", {})  # another process starting in the same second
    second = layout.fresh_dir(base)
    assert first == base and second == base + "_1" and Path(second).is_dir()


def test_concurrent_processes_never_share_a_fresh_folder(tmp_path):
    base = tmp_path / "10-00-00"
    code = f"from lightning_resnet.sweeps.layout import fresh_dir; print(fresh_dir({str(base)!r}))"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(4)]
    folders = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert len(set(folders)) == 4 and all(Path(f).is_dir() for f in folders)


# -- device slots ----------------------------------------------------------------------------------
HOLD_SLOT = textwrap.dedent(
    """
    import json, sys, time
    from lightning_resnet.sweeps.devices import claim_slot
    slot = claim_slot(sys.argv[1], 2, gpus=[5, 7], timeout_s=float(sys.argv[2]))
    again = claim_slot(sys.argv[1], 2, gpus=[5, 7])  # the next job of the same worker
    print(json.dumps({"device": slot.device, "again": again.device, "t": time.time()}), flush=True)
    time.sleep(float(sys.argv[3]))
    """
)


@pytest.mark.slow
def test_concurrent_jobs_never_get_the_same_device(tmp_path):
    """Fake device list [5, 7]: two live workers hold distinct devices, a third waits for one to exit."""
    locks = tmp_path / "slots"

    def start(timeout: float, hold: float) -> subprocess.Popen:
        args = [sys.executable, "-c", HOLD_SLOT, str(locks), str(timeout), str(hold)]
        return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    holders = [start(60, 4), start(60, 4)]
    claims = [json.loads(p.stdout.readline()) for p in holders]  # both hold a slot now
    claims.append(json.loads(start(60, 0).communicate(timeout=120)[0]))
    for p in holders:
        p.wait(timeout=60)
    assert {claims[0]["device"], claims[1]["device"]} == {5, 7}
    assert all(c["again"] == c["device"] for c in claims)  # a worker keeps its device for its life
    assert claims[2]["t"] >= min(claims[0]["t"], claims[1]["t"]) + 3.5  # waited until a holder exited


def test_device_slot_errors_and_cpu_shares(tmp_path):
    with pytest.raises(RuntimeError, match="n_jobs <= 2"):
        claim_slot(tmp_path / "a", 3, gpus=[0, 1])
    slot = claim_slot(tmp_path / "b", 2, gpus=[], cpus=8)
    assert (slot.accelerator, slot.device, slot.threads) == ("cpu", None, 4)
    assert parallel_slots(gpus=[0, 1, 2]) == 3
    assert parallel_slots(gpus=[], cpus=2) == 2 and parallel_slots(gpus=[], cpus=16) == 4


# -- configs and plugins ---------------------------------------------------------------------------
def test_launcher_and_search_configs_compose(tmp_path):
    for plugin in ("hydra_joblib_launcher", "hydra_submitit_launcher", "hydra_optuna_sweeper"):
        require_extra(f"hydra_plugins.{plugin}", "sweeps")  # their configs compose only when installed
    gpus = compose_config(tmp_path, ["launcher=gpus"], return_hydra_config=True)
    assert "joblib" in gpus.hydra.launcher._target_.lower() and gpus.claim_device is True
    slurm = compose_config(tmp_path, ["launcher=slurm", "trainer=ddp", "trainer.devices=4"], return_hydra_config=True)
    assert slurm.hydra.launcher.gpus_per_node == 4 and slurm.hydra.launcher.tasks_per_node == 4
    optuna = compose_config(tmp_path, ["hparams_search=optuna"], return_hydra_config=True)
    assert optuna.hydra.sweeper.direction == "maximize"
    assert set(optuna.hydra.sweeper.params) == {"optimizer", "optimizer.lr", "optimizer.weight_decay", "model"}
    local = compose_config(tmp_path, [], return_hydra_config=True)
    assert "BasicLauncher" in local.hydra.launcher._target_


def test_a_missing_plugin_is_named_with_its_extra(monkeypatch):
    monkeypatch.setattr(plugins.importlib.util, "find_spec", lambda name: None)
    message = plugins.missing_plugin_message(["model=resnet18", "launcher=ray"])
    assert "launcher=ray needs ray, which is not installed" in message and "lightning-resnet[ray]" in message
    assert plugins.missing_plugin_message(["model=resnet18"]) is None
    monkeypatch.setattr(sys, "argv", ["lightning_resnet", "-m", "launcher=ray"])
    with pytest.raises(SystemExit, match=r"lightning-resnet\[ray\]"):  # before Hydra composes anything
        cli()


# -- the report, from hand-made job folders --------------------------------------------------------
def test_report_sorts_jobs_groups_repeats_and_lists_failures(tmp_path):
    for seed, (a, b) in enumerate([(0.90, 0.80), (0.91, 0.60), (0.89, 0.95)]):
        write_job_folder(tmp_path, f"model=a,seed={seed}", ["model=a", f"seed={seed}"], a)
        write_job_folder(tmp_path, f"model=b,seed={seed}", ["model=b", f"seed={seed}"], b)
    write_job_folder(tmp_path, "model=c", ["model=c", "resume=true"], None, status="failed")
    write_job_folder(tmp_path, "model=d", ["model=d"], None, status="unfinished")
    rows = write_summary(tmp_path)
    assert [r.job for r in rows[:2]] == ["model=b,seed=2", "model=a,seed=1"]
    assert [(r.job, r.status) for r in rows[-2:]] == [("model=c", "failed"), ("model=d", "unfinished")]
    table = summary_rows(tmp_path)
    assert table["model=c"]["error"] == "ValueError: bad lr" and table["model=c"]["overrides"] == "model=c"
    assert close(table["model=a,seed=0"]["test_acc"], 0.89) and close(table["model=a,seed=0"]["silhouette"], 0.25)
    with (tmp_path / "summary_groups.csv").open() as file:
        groups = {row["configuration"]: row for row in csv.DictReader(file)}
    assert close(groups["model=a"]["best_val_acc_mean"], 0.90)
    assert close(groups["model=a"]["best_val_acc_std"], 0.01) and groups["model=a"]["best_val_acc_n"] == "3"
    markdown = (tmp_path / "summary.md").read_text()
    assert "failed: ValueError: bad lr" in markdown and "(noise)" in markdown  # b's spread swamps a 0.02 gap
    assert (tmp_path / "summary.png").stat().st_size > 10_000


def test_report_ranks_by_the_configured_monitor(tmp_path):
    for name, loss in (("model=a", 0.3), ("model=b", 0.1), ("model=c", 0.2)):
        write_job_folder(tmp_path, name, [name], 0.5, config={"monitor": "val/loss", "monitor_mode": "min"})
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())
        (tmp_path / name / "metrics.json").write_text(json.dumps({**metrics, "best_score": loss}))
        (tmp_path / name / "history.json").write_text(json.dumps([{"epoch": 0, "val/loss": loss}]))
    rows = write_summary(tmp_path)
    assert [r.job for r in rows] == ["model=b", "model=c", "model=a"]  # lowest loss first
    assert rows[0].curve == [0.1]  # the curves follow the monitored metric
    assert "Sorted by `val/loss` (min)" in (tmp_path / "summary.md").read_text()


def test_report_cli_on_a_folder_without_jobs(tmp_path):
    from lightning_resnet.tasks.summarize import main

    assert main([str(tmp_path)]) == 2


# -- end to end ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_by_two_sweep_summary_equals_each_jobs_metrics(small_sweep):
    sweep = small_sweep
    jobs = sorted(p.name for p in sweep.iterdir() if (p / ".hydra").is_dir())
    assert jobs == ["optimizer=adam,seed=0", "optimizer=adam,seed=1", "optimizer=sgd,seed=0", "optimizer=sgd,seed=1"]
    assert not (sweep.parent / "outputs").exists()  # the sweep ran from its parent folder
    rows = summary_rows(sweep)
    assert set(rows) == set(jobs)
    for job, row in rows.items():
        metrics = read_json(sweep / job / "metrics.json")
        assert row["status"] == "ok" and int(row["epochs"]) == metrics["epochs_run"] == 2
        assert close(row["best_val_acc"], metrics["best"]["val/acc"]) and close(row["score"], metrics["best_score"])
        assert close(row["test_acc"], metrics["test"]["test/acc"]) and close(row["test_f1"], metrics["test"]["test/f1"])
        assert close(row["gmacs"], metrics["model"]["gmacs"]) and int(row["params"]) == metrics["model"]["params_total"]
        assert close(row["silhouette"], metrics["report"]["silhouette"])
        assert list((sweep / job / "tensorboard").glob("events.out.tfevents.*"))
    scores = [float(row["score"]) for row in rows.values()]
    assert scores == sorted(scores, reverse=True)
    assert "± " in (sweep / "summary.md").read_text()  # seeds pooled per optimizer


@pytest.mark.slow
def test_failed_job_is_recorded_and_resume_skips_finished_and_continues_unfinished(tmp_path, sweep_here):
    sweep = tmp_path / "sweep"
    args = ["optimizer.lr=0.001,0.002,-1.0", *QUICK, *NO_REPORTS, f"hydra.sweep.dir={sweep}"]
    sweep_here(*args)
    rows = summary_rows(sweep)
    assert rows["optimizer.lr=-1.0"]["status"] == "failed"
    assert "Invalid learning rate" in rows["optimizer.lr=-1.0"]["error"]
    assert rows["optimizer.lr=0.001"]["status"] == rows["optimizer.lr=0.002"]["status"] == "ok"
    done, unfinished = sweep / "optimizer.lr=0.001", sweep / "optimizer.lr=0.002"
    finished_metrics = (done / "metrics.json").read_text()
    for name in ("status.json", "metrics.json"):  # as if killed after its first epoch's checkpoint
        (unfinished / name).unlink()

    sweep_here(*args, "trainer.max_epochs=2", "resume=true")
    assert (done / "metrics.json").read_text() == finished_metrics  # skipped
    resumed = read_json(unfinished / "metrics.json")
    assert resumed["resumed_from"] == str(unfinished / "checkpoints" / "last.ckpt")
    assert resumed["epochs_run"] == 2  # epoch 0 from the checkpoint, epoch 1 trained now
    assert summary_rows(sweep)["optimizer.lr=-1.0"]["status"] == "failed"


@pytest.mark.slow
def test_killed_run_continues_from_its_last_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "lightning_resnet", f"hydra.run.dir={run_dir}", *QUICK, *NO_REPORTS]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([*args, "trainer.max_epochs=100"], cwd=tmp_path, env=env, stderr=subprocess.DEVNULL)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while not last.is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)  # let it save another epoch or be mid-way through one
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    saved_epoch = torch.load(last, map_location="cpu", weights_only=False)["epoch"]
    assert not (run_dir / "metrics.json").exists()

    resumed = [*QUICK, *NO_REPORTS, "ckpt_path=last", f"trainer.max_epochs={saved_epoch + 2}"]
    metrics = run(compose_config(run_dir, resumed))  # in process: what matters is what the killed run left
    assert metrics["resumed_from"] == "last"
    history = read_json(run_dir / "history.json")
    assert [row["epoch"] for row in history] == list(range(saved_epoch + 2))  # nothing lost, nothing repeated


@pytest.mark.slow
def test_ddp_jobs_of_a_sweep_train_once_in_their_own_folders_and_a_failing_one_stops_only_itself(tmp_path, sweep_here):
    """`devices=2` on the CPU, where Lightning picks DDP itself (`trainer=ddp_sim` runs under SLURM and across
    nodes). Each DDP job runs in a child process, which Lightning kills when a rank fails; the sweep's driver
    (this test's process) goes on."""
    sweep = tmp_path / "sweep"
    ddp = ["trainer.accelerator=cpu", "trainer.devices=2"]
    sweep_here(*ddp, "optimizer.lr=-1.0,0.01", *QUICK, *NO_REPORTS, f"hydra.sweep.dir={sweep}")
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["optimizer.lr=-1.0", "optimizer.lr=0.01"]  # the children did not re-run the sweep
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()
    rows = summary_rows(sweep)
    assert rows["optimizer.lr=-1.0"]["status"] == "failed"
    assert "Invalid learning rate" in rows["optimizer.lr=-1.0"]["error"]
    ok = sweep / "optimizer.lr=0.01"
    assert rows[ok.name]["status"] == "ok" == read_json(ok / "status.json")["status"]
    assert read_json(ok / "metrics.json")["test"]["test/acc"] > 0
    assert (ok / "train_ddp_process_1.log").is_file()  # rank 1 ran in the job's folder


@pytest.mark.parametrize(
    ("trainer", "environ", "expected"),
    [
        ({"accelerator": "cpu", "devices": 2}, {}, True),
        ({"accelerator": "cpu", "devices": 1}, {}, False),
        ({"accelerator": "cpu", "devices": 1, "num_nodes": 2}, {}, True),
        ({"accelerator": "gpu", "devices": [0, 1]}, {}, True),
        ({"accelerator": "gpu", "devices": "0,"}, {}, False),
        ({"accelerator": "cpu", "devices": "auto"}, {}, False),
        ({"accelerator": "cpu", "devices": 2}, {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "2"}, False),  # srun did
        ({"accelerator": "cpu", "devices": 2}, {"TORCHELASTIC_RUN_ID": "x", "WORLD_SIZE": "2"}, False),  # torchrun
        (
            {"accelerator": "cpu", "devices": 2},
            {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "2", "SLURM_JOB_NAME": "bash"},
            True,
        ),
        ({"accelerator": "cpu", "devices": 2, "strategy": "single_device"}, {}, False),
    ],
)
def test_a_job_runs_in_a_child_process_when_lightning_would_start_its_ranks(monkeypatch, trainer, environ, expected):
    for name in (
        "SLURM_JOB_ID",
        "SLURM_NTASKS",
        "SLURM_JOB_NAME",
        "TORCHELASTIC_RUN_ID",
        *jobs.OTHER_LAUNCHERS_VARIABLES,
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert jobs.starts_own_ranks(OmegaConf.create(trainer)) is expected


@pytest.mark.slow
def test_gpus_launcher_on_cpu_runs_jobs_in_parallel_processes_with_their_own_slots(tmp_path):
    require_extra("hydra_plugins.hydra_joblib_launcher", "sweeps")
    sweep = tmp_path / "sweep"
    run_cli(tmp_path, "launcher=gpus", "optimizer=adam,sgd", *QUICK, *NO_REPORTS, f"hydra.sweep.dir={sweep}")
    status = [read_json(sweep / job / "status.json") for job in ("optimizer=adam", "optimizer=sgd")]
    assert all(s["status"] == "ok" for s in status)
    devices = [s["device"] for s in status]
    assert {d["index"] for d in devices} == {0, 1} and devices[0]["pid"] != devices[1]["pid"]
    assert os.getpid() not in {d["pid"] for d in devices}
    assert all(d["accelerator"] == "cpu" and d["threads"] >= 1 for d in devices)
    assert max(s["started"] for s in status) < min(s["ended"] for s in status)  # ran at the same time


@pytest.mark.slow
def test_three_trial_optuna_search_reports_its_best_trial(tmp_path, sweep_here):
    require_extra("hydra_plugins.hydra_optuna_sweeper", "sweeps")
    sweep = tmp_path / "sweep"
    sweep_here(
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=3",
        "~hydra.sweeper.params.model",  # resnet18 only: quick
        *QUICK,
        *NO_REPORTS,
        f"hydra.sweep.dir={sweep}",
    )
    rows = summary_rows(sweep)
    assert len(rows) == 3 and all(r["status"] == "ok" for r in rows.values())
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    scores = [float(r["score"]) for r in rows.values()]
    assert math.isclose(best["best_value"], max(scores))
    assert close(next(iter(rows.values()))["score"], max(scores))  # the best trial heads the table


@pytest.mark.slow
def test_three_fold_sweep_uses_disjoint_folds_and_reports_mean_and_std(tmp_path, sweep_here):
    rng = np.random.default_rng(0)
    images = tmp_path / "images"
    for name, tint in (("cat", 0), ("dog", 120)):
        for i in range(9):
            write_image(images / name / f"{i}.png", rng, tint)
    sweep = tmp_path / "sweep"
    data = ["data=folder", f"data.root={images}", "data.layout=classes", "data.image_size=32", "data.num_workers=0"]
    sweep_here(*data, "data.num_folds=3", "data.fold=0,1,2", *QUICK, *NO_REPORTS, f"hydra.sweep.dir={sweep}")

    val_parts = []
    for fold in range(3):  # each job's own composed config gives its validation split
        cfg = OmegaConf.load(sweep / f"data.fold={fold}" / ".hydra" / "config.yaml")
        val_parts.append({str(p) for p in build_datamodule(cfg).datasets["val"].paths})
    assert all(a.isdisjoint(b) for i, a in enumerate(val_parts) for b in val_parts[i + 1 :])
    assert set().union(*val_parts) == {str(p) for p in images.rglob("*.png")}

    with (sweep / "summary_groups.csv").open() as file:
        (group,) = list(csv.DictReader(file))
    values = [read_json(sweep / f"data.fold={k}" / "metrics.json")["best"]["val/acc"] for k in range(3)]
    assert group["best_val_acc_n"] == "3"
    assert close(group["best_val_acc_mean"], float(np.mean(values)))
    assert close(group["best_val_acc_std"], float(np.std(values, ddof=1)))


@pytest.mark.slow
def test_optuna_search_with_fast_dev_run_scores_every_trial(tmp_path, sweep_here):
    """lightning-hydra-template's smoke test: `fast_dev_run` saves no scored checkpoint, so each trial
    reports the last logged `monitor` value (it returned None, which Optuna cannot rank)."""
    require_extra("hydra_plugins.hydra_optuna_sweeper", "sweeps")
    sweep = tmp_path / "sweep"
    sweep_here(
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=3",
        "~hydra.sweeper.params.model",  # resnet18 only: quick
        "++trainer.fast_dev_run=true",
        "data.image_size=32",
        "callbacks.progress_bar.refresh_rate=0",
        "trainer.enable_model_summary=false",
        *NO_REPORTS,
        f"hydra.sweep.dir={sweep}",
    )
    jobs = [p for p in sweep.iterdir() if (p / ".hydra").is_dir()]
    assert len(jobs) == 3
    for job in jobs:
        status = read_json(job / "status.json")
        assert status["status"] == "ok" and math.isfinite(status["best_score"]), job.name
    assert math.isfinite(yaml.safe_load((sweep / "optimization_results.yaml").read_text())["best_value"])


@pytest.mark.slow
def test_optuna_search_goes_on_after_a_failed_trial(tmp_path, sweep_here):
    """A failed trial (its job returns NaN) is recorded as failed; it used to end the whole search."""
    require_extra("hydra_plugins.hydra_optuna_sweeper", "sweeps")
    sweep = tmp_path / "sweep"
    # seed 42: trial 0 draws lr 0.001, trial 1 lr -1.0 (checked below, so a changed draw shows up)
    sweep_here(
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.params=null",
        "optimizer.lr=-1.0,0.001",
        *QUICK,
        *NO_REPORTS,
        f"hydra.sweep.dir={sweep}",
    )
    rows = summary_rows(sweep)
    assert rows["optimizer.lr=-1.0"]["status"] == "failed" and rows["optimizer.lr=0.001"]["status"] == "ok"
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_params"] == {"optimizer.lr": 0.001}
    assert close(rows["optimizer.lr=0.001"]["score"], best["best_value"])


@pytest.mark.slow
def test_optuna_search_whose_trials_all_fail_ends_with_one_clear_line_and_its_report(tmp_path):
    """The sweeper's "No trials are completed yet." traceback, with no report, used to end such a search."""
    require_extra("hydra_plugins.hydra_optuna_sweeper", "sweeps")
    sweep = tmp_path / "sweep"
    overrides = [
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        "~hydra.sweeper.params.model",  # resnet18 only: quick
        "optimizer.lr=-1",  # every trial fails
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "data.image_size=32",
        "callbacks.progress_bar.refresh_rate=0",
        f"hydra.sweep.dir={sweep}",
    ]
    command = [sys.executable, "-m", "lightning_resnet", "-m", *overrides]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    last_line = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 1, result.stderr[-4000:]
    assert last_line == (
        "hparams_search=optuna: all 2 trials failed (first: ValueError: Invalid learning rate: -1); "
        f"the reasons are in {sweep / 'summary.md'}"
    )
    assert "Traceback" not in result.stderr and "No trials are completed" not in result.stderr
    rows = summary_rows(sweep)
    assert len(rows) == 2 and all(r["status"] == "failed" for r in rows.values())
    markdown = (sweep / "summary.md").read_text()
    assert all(f"| {job} | failed: ValueError: Invalid learning rate: -1 |" in markdown for job in rows)
