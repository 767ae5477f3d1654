"""`make bench` is not in the suite (no timings here), but its sections must import and its
statistics must be right: a broken section would only show after minutes of measuring."""

import importlib
import inspect

import numpy as np
import pytest

from benchmarks.__main__ import QUICK, SECTIONS
from benchmarks.overhead import bootstrap_interval


@pytest.mark.parametrize("section", SECTIONS)
def test_every_section_imports_and_takes_its_quick_settings(section):
    run = importlib.import_module(f"benchmarks.{section}").run
    inspect.signature(run).bind(**QUICK.get(section, {}))  # `make bench ARGS=--quick` passes these


def test_bootstrap_interval_brackets_the_true_ratio():
    rng = np.random.default_rng(1)
    machine = rng.uniform(0.3, 0.5, size=300)  # per-step machine speed, shared by both sides of a pair
    plain = machine * rng.normal(1.0, 0.05, size=300)
    light = machine * 1.1 * rng.normal(1.0, 0.05, size=300)  # Lightning 10 % slower: ratio 1 / 1.1
    low, high = bootstrap_interval(plain.tolist(), light.tolist())
    assert low < 1 / 1.1 < high
    assert high - low < 0.1


@pytest.mark.slow
def test_gpu_section_runs_every_setting_on_the_cpu_path():
    """The GPU section only measures on CUDA, where device time is scarce: its code runs here first,
    with a tiny model and `accelerator="cpu"`."""
    from benchmarks import gpu

    rows = gpu.run(steps=3, warmup=1, batch=4, size=32, arch="resnet18", jpegs=12, compile=False, accelerator="cpu")
    rates = {row.name: row.value for row in rows if row.unit == "img/s" and not row.name.startswith("NVIDIA")}
    eager = [name for name, setting in gpu.SETTINGS.items() if not setting.get("compile")]
    assert {f"synthetic, {name}" for name in eager} <= set(rates)
    assert sum(name.startswith("real JPEGs, cache=") for name in rates) == 2  # PIL path and pixel cache
    assert all(isinstance(rate, float) and rate > 0 for rate in rates.values())
