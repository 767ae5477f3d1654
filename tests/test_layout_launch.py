"""Which run folder each rank of an externally launched job (torchrun, srun) resolves: the environment cases."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from lightning_resnet.errors import ConfigError
from lightning_resnet.external_launch import LaunchedJob, launched_job, launched_rank
from lightning_resnet.sweeps import layout
from tests.conftest import compose_config

LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "GROUP_RANK", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")


def outside_any_launch(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` without what torchrun, srun or Lightning set, as if the tests were not run by one."""
    launched = ("TORCHELASTIC_", "SLURM_")
    return {k: v for k, v in environ.items() if k not in LAUNCH_VARIABLES and not k.startswith(launched)}


def torchrun(rank: int, world: int = 4, run_id: str = "exp1", node: int = 0) -> dict[str, str]:
    """The variables torchrun sets in a worker (`--nnodes=2 --nproc-per-node=2 --rdzv-id=<run_id>`)."""
    return {
        "TORCHELASTIC_RUN_ID": run_id,
        "RANK": str(rank),
        "WORLD_SIZE": str(world),
        "LOCAL_RANK": str(rank % 2),
        "GROUP_RANK": str(node),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29500",
    }


def srun(procid: int, ntasks: int = 2, job: str = "4242", step: str | None = "0", name: str = "train.sh"):
    """The variables srun sets in one task of `srun --ntasks=<ntasks>` in batch job `job`."""
    env = {"SLURM_JOB_ID": job, "SLURM_NTASKS": str(ntasks), "SLURM_PROCID": str(procid), "SLURM_JOB_NAME": name}
    return env if step is None else {**env, "SLURM_STEP_ID": step}


@pytest.fixture
def clean_env(monkeypatch):
    """No launcher variables from whatever runs the tests (a CI job under SLURM, say)."""
    for key in set(os.environ) - set(outside_any_launch(os.environ)):
        monkeypatch.delenv(key)
    return monkeypatch


def test_no_launcher_means_no_launched_job():
    assert launched_job({}) is None
    assert launched_rank({}) == 0
    # Lightning's own DDP children (trainer=ddp on one machine) are not an external launch: rank 0 passes its folder
    assert launched_job({"LOCAL_RANK": "1", "NODE_RANK": "0", "WORLD_SIZE": "2", "MASTER_PORT": "1234"}) is None


def test_every_torchrun_rank_on_every_node_names_the_same_folder():
    jobs = [launched_job(torchrun(rank, node=rank // 2)) for rank in range(4)]
    assert [job.rank for job in jobs] == [0, 1, 2, 3]
    assert {job.folder_name for job in jobs} == {"torchrun-exp1"}
    assert jobs[3] == LaunchedJob("torchrun", "exp1", 3, 4)


def test_a_single_process_torchrun_is_an_ordinary_run():
    assert launched_job(torchrun(0, world=1, run_id="none")) is None


def test_torchrun_without_a_rendezvous_id_is_refused_with_the_fix():
    job = launched_job(torchrun(1, run_id="none"))
    with pytest.raises(ConfigError, match=r"--rdzv-id=<id> on every node.*--standalone.*hydra.run.dir"):
        _ = job.folder_name


def test_a_rendezvous_id_becomes_one_folder_name():
    assert launched_job(torchrun(0, run_id="team/exp 7")).folder_name == "torchrun-team-exp-7"


def test_every_srun_task_names_the_same_folder_per_step():
    first, second = launched_job(srun(0)), launched_job(srun(1))
    assert (first.rank, second.rank) == (0, 1)
    assert first.folder_name == second.folder_name == "slurm-4242.0"
    assert launched_job(srun(1, step="1")).folder_name == "slurm-4242.1"  # a later srun of the same batch script
    assert launched_job(srun(0, step=None)).folder_name == "slurm-4242"  # python run in the batch step itself


def test_slurm_jobs_of_one_task_and_salloc_shells_are_ordinary_runs():
    assert launched_job(srun(0, ntasks=1)) is None  # sbatch of one task: the clock names its folder
    assert launched_job(srun(0, name="bash")) is None  # an salloc shell: Lightning spawns the ranks itself
    assert launched_job(srun(0, name="interactive")) is None


def test_torchrun_under_srun_counts_as_torchrun():
    job = launched_job({**srun(1, ntasks=2), **torchrun(3, run_id="4242")})
    assert (job.launcher, job.rank, job.folder_name) == ("torchrun", 3, "torchrun-4242")


def test_run_dir_takes_the_clock_outside_a_launch_and_the_job_id_inside(clean_env, tmp_path):
    parent = str(tmp_path / "outputs")
    first = layout.run_dir(parent, "2025-01-02/10-11-12")
    assert first == f"{parent}/2025-01-02/10-11-12" and Path(first).is_dir()
    clean_env.setattr(layout, "_claimed", {})  # a second process, the same second
    assert layout.run_dir(parent, "2025-01-02/10-11-12") == f"{parent}/2025-01-02/10-11-12_1"

    for rank, clock in ((0, "2025-01-02/23-59-59"), (1, "2025-01-03/00-00-01")):  # each rank's own clock
        for key, value in torchrun(rank, world=2, run_id="exp1").items():
            clean_env.setenv(key, value)
        assert layout.run_dir(parent, clock) == f"{parent}/torchrun-exp1"
    assert not Path(parent, "torchrun-exp1").exists()  # Hydra makes it, in every rank, exist_ok


def test_rank_zero_keeps_hydras_files_and_log_name(clean_env):
    assert layout.rank_zero_only(".hydra") == ".hydra"
    for key, value in srun(1).items():
        clean_env.setenv(key, value)
    assert layout.rank_zero_only(".hydra") is None
    clean_env.setenv("SLURM_PROCID", "0")
    assert layout.rank_zero_only(".hydra") == ".hydra"


def test_composed_hydra_config_of_each_rank(clean_env, tmp_path):
    clean_env.chdir(tmp_path)  # the clock's folder is made relative to the working directory

    def hydra_of(*overrides: str):
        cfg = compose_config(tmp_path, overrides, return_hydra_config=True).hydra
        return cfg.run.dir, cfg.output_subdir, cfg.job.name

    run_dir, subdir, name = hydra_of()
    assert Path(run_dir).parent.name == time.strftime("%Y-%m-%d") and (subdir, name) == (".hydra", "app")
    for key, value in torchrun(1, world=2).items():
        clean_env.setenv(key, value)
    assert hydra_of() == ("outputs/torchrun-exp1", None, "app_rank1")
    assert hydra_of(f"hydra.run.dir={tmp_path / 'mine'}")[0] == str(tmp_path / "mine")  # explicit wins


@pytest.mark.slow
def test_cli_without_a_rendezvous_id_exits_with_the_message(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "lightning_resnet", "trainer.max_epochs=1"],
        env={**outside_any_launch(os.environ), **torchrun(1, world=2, run_id="none")},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.startswith("error: torchrun started this process as rank 1 of 2 without a rendezvous id")
    assert not (tmp_path / "outputs").exists()
