"""Shared fixtures: compose the real config tree with overrides, writing into a temp dir."""

from __future__ import annotations

import functools
import importlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from lightning_resnet import CONFIG_DIR

if os.environ.get("PYTEST_XDIST_WORKER"):  # `pytest -n 2`: one thread per worker and per child process
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

# Small and quick: 32 px digits, a few batches, no progress bar spam.
FAST = [
    "data.image_size=32",
    "data.batch_size=32",
    "callbacks.progress_bar.refresh_rate=0",
    "trainer.enable_model_summary=false",
]


def require_extra(module: str, extra: str) -> Any:
    """Import an optional dependency, or skip with the command that installs it.

    Under CI (`CI=true`), which installs every extra its tests need, a missing one fails instead, so a
    green CI means these tests ran.
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        message = f"needs {module} from the `{extra}` extra: pip install -e '.[{extra}]'"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message} (CI installs it: see .ci/run)")
        pytest.skip(message, allow_module_level=True)


def require_system_font(lang: str, package: str) -> None:
    """Skip unless fontconfig lists a font with glyphs for `lang` (e.g. "ko"), with the command that
    installs the Debian `package`; under CI (`CI=true`), which installs it, fail instead, as `require_extra`."""
    fc_list = shutil.which("fc-list")
    listed = subprocess.run([fc_list, f":lang={lang}", "family"], capture_output=True, text=True) if fc_list else None
    if listed is None or not listed.stdout.strip():
        message = f"needs a font with {lang!r} glyphs: apt-get install -y --no-install-recommends {package}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message} (CI installs it: see .ci/run)")
        pytest.skip(message)


def require_tool(executable: str, install: str) -> str:
    """The path of a system program (a SLURM client, Ray's CLI, Chromium), or skip with `install`, the
    command that provides it; under CI (`CI=true`), which installs it, fail instead, as `require_extra`."""
    path = shutil.which(executable)
    if path is None:
        message = f"needs `{executable}`: {install}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message} (CI installs it: see .ci/run)")
        pytest.skip(message)
    return path


def compose_config(
    output_dir: Path,
    overrides: list[str] | tuple[str, ...] = (),
    return_hydra_config: bool = False,
    config_name: str = "train",
) -> DictConfig:
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose(
            config_name,
            overrides=[f"paths.output_dir={output_dir}", *overrides],
            return_hydra_config=return_hydra_config,
        )


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """`make_cfg("model=resnet34", ...)`: the composed train config, outputs under tmp_path."""

    def _make(*overrides: str, fast: bool = True) -> DictConfig:
        return compose_config(tmp_path / "run", [*(FAST if fast else []), *overrides])

    return _make


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


@contextmanager
def built_once(tmp_path_factory, name: str) -> Iterator[tuple[Path, bool]]:
    """(folder, whether to build it) for a session fixture that every xdist worker shares: the first
    builds under a lock in the session's common temp dir, the others wait and find it built. The builder
    writes `<folder>/.built` when done; read-only use by the tests keeps sharing safe."""
    from lightning_resnet.data.cache import exclusive

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # pytest-N/, above each worker's popen-gwK/
    folder = shared / name
    with exclusive(shared / f"{name}.lock", f"the shared {name}"):
        build = not (folder / ".built").is_file()
        yield folder, build
        if build:
            (folder / ".built").touch()


@pytest.fixture(scope="session")
def trained_digits_run(tmp_path_factory) -> tuple[Path, dict]:
    """The digits run end to end (2 epochs, 32 px, lr 0.002), trained once and shared by the tests of the
    train task, report, evaluate, predict, explain and export: (run directory, metrics.json content)."""
    from lightning_resnet.tasks.train import run

    with built_once(tmp_path_factory, "digits_run") as (out, build):
        if build:
            run(compose_config(out, [*FAST, "trainer.max_epochs=2", "optimizer.lr=0.002"]))
    return out, read_json(out / "metrics.json")


def run_sweep(folder: Path, *overrides: str) -> None:
    """`python -m lightning_resnet -m *overrides` in this process (no start-up cost), from `folder`.
    Launchers that start processes (joblib, DDP children) need a real CLI run."""
    from lightning_resnet.train import main

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setattr(sys, "argv", ["lightning_resnet", "-m", *overrides])
        main()


@pytest.fixture(scope="session")
def small_sweep(tmp_path_factory) -> Path:
    """`python -m lightning_resnet -m optimizer=adam,sgd seed=0,1` (2 epochs of 3 batches, reports on), run
    once in process for the sweep, dashboard and browser tests: the sweep folder."""
    with built_once(tmp_path_factory, "small_sweep") as (folder, build):
        if build:
            quick = ["trainer.max_epochs=2", "trainer.limit_train_batches=3", "trainer.limit_val_batches=2"]
            quick += ["trainer.limit_test_batches=2", f"hydra.sweep.dir={folder / 'sweep'}"]
            folder.mkdir()
            run_sweep(folder, "optimizer=adam,sgd", "seed=0,1", *FAST, *quick)
    return folder / "sweep"


@pytest.fixture
def sweep_here(tmp_path) -> Callable[..., None]:
    """`sweep_here(*overrides)`: `run_sweep` from `tmp_path`."""
    return functools.partial(run_sweep, tmp_path)
