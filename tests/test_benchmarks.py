"""`make bench` is not in the suite (no timings here), but its sections must import and its
statistics must be right: a broken section would only show after minutes of measuring."""

import importlib
import inspect
import re
import sys

import numpy as np
import pytest
import torch

from benchmarks import whole_run
from benchmarks.__main__ import QUICK, SECTIONS
from benchmarks.overhead import bootstrap_interval
from benchmarks.whole_run import ProcessRun, RunRecord, alternate, run_process, summary_rows


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


# -- whole_run: the default command against the plain script, as whole processes --------------------


def test_the_plain_script_splits_and_normalises_as_the_data_module():
    """Same work on both sides of the whole-run ratio: the same images in each split, the same mean/std."""
    from benchmarks.plain_digits import digit_splits
    from lightning_resnet.data import DigitsDataModule

    splits = digit_splits(32, seed=42)
    datamodule = DigitsDataModule(seed=42, num_workers=0)
    datamodule.setup("fit")
    for name in ("train", "val", "test"):
        images, labels = splits[name]
        assert torch.equal(datamodule.datasets[name].images(), images), name
        assert datamodule.datasets[name].labels == labels.tolist(), name
    train = splits["train"][0].double() / 255
    assert train.mean(dim=(0, 2, 3)).tolist() == pytest.approx(datamodule.mean, abs=1e-9)
    assert train.std(dim=(0, 2, 3), unbiased=False).tolist() == pytest.approx(datamodule.std, abs=1e-9)
    digits = splits["train"][1], splits["val"][1], splits["test"][1]
    assert [len(labels) for labels in digits] == [1257, 270, 270]  # 70/15/15 of 1,797


def test_alternate_runs_the_two_sides_in_turn():
    order: list[str] = []
    pairs = alternate(lambda i: order.append(f"a{i}") or i, lambda i: order.append(f"b{i}") or -i, 3)
    assert order == ["a0", "b0", "a1", "b1", "a2", "b2"]
    assert pairs == [(0, 0), (1, -1), (2, -2)]


def test_run_process_reports_wall_cpu_and_peak_memory_of_a_real_child(tmp_path):
    burn = (
        "import time\nblock = b'x' * (64 << 20)\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    )
    child = run_process([sys.executable, "-c", burn], tmp_path, tmp_path / "child.log")
    assert child.wall_s >= child.user_s + child.sys_s - 0.05 >= 0.25
    assert 64 < child.peak_mib < 150  # its own 64 MiB, not the RSS of this (pytest) process

    with pytest.raises(RuntimeError, match=r"exited 3; last lines of .*\n.*gone"):
        run_process([sys.executable, "-c", "import sys; print('gone'); sys.exit(3)"], tmp_path, tmp_path / "bad.log")


def record(wall: float, first: float, epochs: list[float], acc: float) -> RunRecord:
    return RunRecord(ProcessRun(wall, wall * 0.9, 0.1, 1000.0, 0.0), first, epochs, [e + 0.5 for e in epochs], acc)


def test_the_whole_process_ratio_is_the_median_of_the_pair_ratios():
    ours = [record(12.0, 5.0, [1.2, 1.1], 0.99), record(30.0, 6.0, [2.4, 2.2], 0.99), record(11.0, 5.5, [1.0], 0.98)]
    plain = [record(10.0, 3.0, [1.0, 1.0], 0.995), record(20.0, 4.0, [2.0, 2.0], 0.995), record(10.0, 3.5, [1.0], 1.0)]
    rows = {row.name: row for row in summary_rows(ours, plain, epochs=2)}
    assert rows["ratio default / plain, whole process"].value == pytest.approx(1.2)  # of 1.2, 1.5, 1.1
    assert "1.200, 1.500, 1.100" in rows["ratio default / plain, whole process"].note
    assert rows["ratio default / plain, training epoch"].value == pytest.approx(1.15)  # medians: 1.15, 1.15, 1.0
    assert rows["default run: wall"].value == 12.0 and rows["plain script: wall"].value == 10.0
    assert rows["default run: command to first step"].value == 5.5
    assert rows["default run: test accuracy"].value == 0.99 and rows["plain script: test accuracy"].value == 0.995


@pytest.mark.slow
def test_the_whole_run_section_runs_both_commands_and_reports_their_accuracy():
    """One pair of one-epoch runs: the default command (with the bench's clock callback) and the plain script."""
    rows = {row.name: row for row in whole_run.run(pairs=1, epochs=1, warmup=0)}
    for side in ("default run", "plain script"):
        assert 0 < rows[f"{side}: command to first step"].value < rows[f"{side}: wall"].value
        assert 0.5 < rows[f"{side}: test accuracy"].value <= 1.0  # one epoch of resnet18 on digits
        assert rows[f"{side}: peak RSS"].value > 200
    assert 0.5 < rows["ratio default / plain, whole process"].value < 10
    assert rows["ratio default / plain, training epoch"].value > 0


def test_optimizer_section_times_every_config_fused_and_for_loop():
    from benchmarks import optimizer

    rows = optimizer.run(steps=2, warmup=1, arch="resnet18")
    assert [row.name.split()[0] for row in rows] == ["adam", "adamw", "sgd"]  # one row per conf/optimizer file
    for row in rows:
        loop, ratio = (float(x) for x in re.match(r"for-loop ([\d.]+) ms: ([\d.]+)x", row.note).groups())
        assert row.value > 0 and ratio == pytest.approx(loop / row.value, rel=0.05)
        assert "11.2 M parameters" in row.name  # resnet18 with a 10-class head


# -- pipeline: the per-worker figure --------------------------------------------------------------------


def test_worker_clock_counts_every_image_once_across_workers():
    """The per-worker rate divides the images the workers made by their CPU time: each image counted
    once, whichever worker made it, and the batches delivered as the loader would deliver them."""
    from torch.utils.data import DataLoader

    from benchmarks.pipeline import WorkerClock
    from lightning_resnet.data.datasets import PixelDataset
    from lightning_resnet.data.transforms import collate

    pixels = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 3, 4, 4).contiguous()
    dataset = PixelDataset(pixels, range(10), [i % 2 for i in range(10)])
    loader = DataLoader(dataset, batch_size=3, collate_fn=collate, num_workers=2, persistent_workers=True)
    timed, clock = WorkerClock.around(loader)
    seen = torch.cat([images[:, 0, 0, 0] for images, _ in timed])
    assert sorted(seen.tolist()) == list(range(10))
    seconds, images = clock.totals.sum(0).tolist()
    assert images == 10 and (clock.totals[:, 1] > 0).all()  # both workers made batches
    assert seconds > 0 and clock.rate() == images / seconds


# -- scale: the steady per-image time ------------------------------------------------------------------


def test_steady_rate_spans_batch_5_to_the_last_batchs_start_of_every_epoch(monkeypatch):
    """Neither the first batches (workers starting) nor the last batch and the epoch's end count; the
    steady spans of several epochs add up, less the time `exclude`d inside them."""
    from types import SimpleNamespace

    from benchmarks import scale

    # the starts of batches 5, 6 and 7 of epoch 0, 5 and 6 of epoch 1, then the short epoch's 5
    ticks = iter([10.0, 11.0, 13.0, 20.0, 24.0, 30.0])
    monkeypatch.setattr(scale, "time", SimpleNamespace(perf_counter=lambda: next(ticks)))
    rate = scale.SteadyRate()
    for index in range(8):
        rate.batch_starts(index, 10 if index == 7 else 32)  # a short last batch
    assert rate.images == 7 * 32 + 10
    assert rate.seconds_per_image() == pytest.approx(3.0 / 64)  # batches 5 and 6: 64 images in 3 s
    for index in range(7):
        if index == 6:
            rate.exclude(1.0)  # measuring something else for 1 s between batches 5 and 6
        rate.batch_starts(index, 32)
    assert rate.seconds_per_image() == pytest.approx((3.0 + 3.0) / 96)  # epoch 1's batch 5: 32 images in 4 - 1 s

    short = scale.SteadyRate()
    for index in range(scale.WARM_BATCHES + 1):
        short.exclude(5.0)  # outside any span: nothing to leave out
        short.batch_starts(index, 32)
    assert short.seconds_per_image() is None  # one mark: no span to time

    cpu_ticks = iter([2.0, 2.5])  # the CPU clock, read only by a rate that asks for it
    monkeypatch.setattr(scale, "time", SimpleNamespace(process_time=lambda: next(cpu_ticks)))
    cpu = scale.SteadyRate("process_time")
    for index in range(scale.WARM_BATCHES + 2):
        cpu.batch_starts(index, 32)
    assert cpu.seconds_per_image() == pytest.approx(0.5 / 32)


def test_alternating_ratios_swap_the_order_every_pair_and_refuse_a_cold_run(monkeypatch, tmp_path):
    """Pairs run small-large, large-small, ...; each ratio is large over small of its own pair."""
    from types import SimpleNamespace

    from benchmarks import scale

    order: list[int] = []
    speed = iter([1.0, 3.0, 3.3, 1.1, 1.2, 3.6])  # ms an image, in the order the runs are made

    def fake_run(root, state, cache, folder, workers, epochs):
        order.append(int(root.name))
        wall = next(speed)
        cpu = wall * (2 if int(root.name) == 40 else 1)  # CPU per image, twice the wall time's ratio
        return SimpleNamespace(steady_ms=wall, steady_cpu_ms=cpu, built=[] if folder.name != "pair1-40-null" else built)

    monkeypatch.setattr(scale, "train_once", fake_run)
    folders = {n: tmp_path / str(n) for n in (10, 40)}
    built: list[str] = []
    wall, cpu = scale.alternating_ratios(folders, folders, None, 2, tmp_path, pairs=3)
    assert order == [10, 40, 40, 10, 10, 40]
    assert wall == pytest.approx([3.0, 3.3 / 1.1, 3.0])
    assert cpu == pytest.approx([6.0, 6.6 / 1.1, 6.0])
    order.clear()
    speed = iter([1.0, 3.0, 3.0, 1.0])
    built = ["pixel cache"]
    with pytest.raises(RuntimeError, match="pair 1 rebuilt"):
        scale.alternating_ratios(folders, folders, None, 2, tmp_path, pairs=2)

    passes: list[str] = []  # the loader alone: passes in the same turns, over the warm data modules
    loader_ms = iter([1.0, 2.0, 2.2, 1.0])

    def fake_pass(dm, epochs):
        passes.append(dm)
        return next(loader_ms), 0.0

    monkeypatch.setattr(scale, "loader_pass", fake_pass)
    assert scale.loader_ratios({10: "dm10", 40: "dm40"}, pairs=2) == pytest.approx([2.0, 2.2])
    assert passes == ["dm10", "dm40", "dm40", "dm10"]


def test_tree_rss_of_a_process_whose_memory_is_gone_is_zero_not_an_error(monkeypatch):
    """A sample taken while the watched child exits: its /proc entry is there, its memory already released
    (no Pss line, and a status without VmHWM, which once stopped a bench run with StopIteration)."""
    from benchmarks import scale

    files = {"/proc/7/smaps_rollup": "", "/proc/7/status": "Name:\ttrue\nState:\tX (dead)\n"}

    class ExitingProc:
        def __init__(self, path: str) -> None:
            self.path = path

        def read_text(self) -> str:
            return files[self.path]

        def iterdir(self):
            return iter(())

    monkeypatch.setattr(scale, "Path", ExitingProc)
    assert scale._tree_rss_kib(7) == (0, 0)


def test_rss_growth_extrapolates_a_rise_and_reports_a_fall_as_no_growth():
    """A peak that fell from 1k to 40k images (run-to-run noise of ~100 MiB) once printed -1.5 GiB at
    1.28 M images; a rise is extrapolated per image."""
    from benchmarks import scale

    rise = scale.rss_growth_row("cache=null", 1000.0, 1039.0, 1_000, 40_000)  # 39 MiB over 39k images
    assert rise.value == pytest.approx(scale.IMAGENET / 1000 / 1024)  # GiB: a thousandth of a MiB an image
    assert "1.02 KiB an image" in rise.note
    fall = scale.rss_growth_row("cache=null", 996.0, 954.0, 1_000, 40_000)
    assert fall.value == 0.0
    assert "none measured" in fall.note and "996 MiB at 1000" in fall.note
