"""Scale: whole training runs on 1k, 10k and 40k images, set-up to epoch, and what they say about 1.28 M.

Small JPEGs (96 px, photo-like, 10 classes) are written once into `~/.cache/lightning-resnet/bench/`;
each size is a folder of hard links to the first N of them. For each size, with `data.cache=null` and
`data.cache=disk`, `python -m lightning_resnet data=folder ... normalize=auto` runs twice on a fresh
`data.cache_dir` (one epoch, or several below 10k images so that about as many are timed at every size:
`epochs_for`): the first run lists, verifies (decodes every image), fingerprints,
computes the statistics and builds the cache; the second must reuse all of it (its log is checked for
any build) and start in seconds. Per run: seconds from launch to the first training step, the training
epoch (the steady per-image time, `SteadyRate`: worker start-up and each epoch's end do not count; in wall
time and in the training process's CPU time), and peak RSS of the main process and of the whole process
tree (DataLoader workers included, each shared page counted once: the sum of proportional set sizes).
The model trains its head only (`finetune=linear_probe`) at 16 px, so the epoch costs little beyond the
input pipeline.

Targets (issue 17): per-image epoch time within +-10 % from 1k to 40k; RSS flat without the cache and
as predicted with it. The ratio 40k/1k comes from `PAIRS` further pairs of warm runs of the two sizes,
made one right after the other (whole runs here move by 15-20 % over the section's 25 minutes on a shared machine).
Every figure is extrapolated to ImageNet's 1,281,167 images (linear fits over the sizes run).
`--sizes 1000,10000` leaves out 40k (minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from PIL import Image

from benchmarks.common import Row, format_table, logged_messages
from benchmarks.decode import bench_cache
from benchmarks.whole_run import CLOCK_ENV, ROOT, RunClock

SIZES = (1_000, 10_000, 40_000)
IMAGENET = 1_281_167
IMAGE_SIDE = 96  # the files
TRAIN_SIDE = 16  # data.image_size: the network costs little, the input pipeline shows
NUM_CLASSES = 10
WARM_BATCHES = 5
TIMED_IMAGES = 10_000  # about this many images are trained on at each size (`epochs_for`)
PAIRS = 3  # warm runs of the smallest and the largest size, alternating, behind the per-image ratio
BATCH = 32
SEED = 42  # the runs' `seed` (conf/train.yaml): the splits, and so the cached statistics, depend on it
BUILDS = {  # a log line that only a run building the result writes
    "verification": "checking ",
    "statistics": "normalize=auto over",
    "pixel cache": "data.cache=disk: decoding",
}


class SteadyRate:
    """Seconds per image in the steady part of every epoch: from the start of batch `WARM_BATCHES` to the
    start of the epoch's last batch, summed over epochs. Neither the workers' start nor the epoch's end (the
    last prefetched batches, the workers' shutdown) counts: both are fixed costs that would weigh 40 times
    more at 1k than at 40k. Time spent measuring something else in between (`exclude`) does not count either.
    `clock`: the function of `time` read, `perf_counter` (wall) or `process_time` (this process's CPU)."""

    def __init__(self, clock: str = "perf_counter") -> None:
        self.clock = clock
        self.images = 0  # before the current batch, every epoch
        self.seconds, self.timed = 0.0, 0  # the steady spans so far: their time and images
        self._mark: tuple[float, int] | None = None  # (clock, images before) at this epoch's latest steady batch

    def batch_starts(self, index: int, size: int) -> None:
        """Batch `index` of its epoch, of `size` images, starts now."""
        if index < WARM_BATCHES:
            self._mark = None
        else:
            now = getattr(time, self.clock)()
            if self._mark is not None:
                self.seconds += now - self._mark[0]
                self.timed += self.images - self._mark[1]
            self._mark = (now, self.images)
        self.images += size

    def exclude(self, seconds: float) -> None:
        """Leave out `seconds` spent before the next `batch_starts` on something that is not the loop's work."""
        if self._mark is not None:  # inside a span: the next batch's start closes it
            self.seconds -= seconds

    def seconds_per_image(self) -> float | None:
        """None when no epoch had `WARM_BATCHES + 2` batches."""
        return self.seconds / self.timed if self.timed else None


def epochs_for(count: int) -> int:
    """Epochs a run of `count` images trains: enough that ~`TIMED_IMAGES` are timed at every size, so the
    small sizes' per-image figure is not a second's worth of batches."""
    return max(1, round(TIMED_IMAGES / count))


class ScaleClock(RunClock):
    """`RunClock` plus the steady rate of the training epochs (`SteadyRate`), in wall time and in the CPU
    time of the training process, which sets the pace (the model steps). The CPU figure leaves out waiting:
    for the workers, the disk, or other processes holding the cores; it still moves with the cores' own
    speed. It leaves out the DataLoader workers' work too (with the cache, ~3 %; without it, the decoding)."""

    def __init__(self) -> None:
        super().__init__()
        self.rate, self.cpu = SteadyRate(), SteadyRate("process_time")

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, index: int) -> None:
        super().on_train_batch_start(trainer)
        self.rate.batch_starts(index, len(batch[0]))
        self.cpu.batch_starts(index, len(batch[0]))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        path = os.environ.get(CLOCK_ENV)
        if path:
            record = json.loads(Path(path).read_text())
            steady = self.rate.seconds_per_image()
            if steady is None:  # too short epochs: their whole time
                steady = sum(record["epoch_train_s"]) / max(1, self.rate.images)
            cpu = self.cpu.seconds_per_image() or float("nan")
            record.update(steady_s_per_image=steady, steady_cpu_s_per_image=cpu, images=self.rate.images)
            Path(path).write_text(json.dumps(record))


def scale_folder(count: int) -> Path:
    """A folder of `count` JPEGs in class folders: hard links to the first `count` of one pool, written once."""
    base = bench_cache() / f"scale-{IMAGE_SIDE}px"
    folder = base / f"n{count}"
    if (folder / ".complete").is_file():
        return folder
    pool = base / "pool"
    written = int((pool / ".count").read_text()) if (pool / ".count").is_file() else 0
    rng = np.random.default_rng(written)
    for i in range(written, count):  # photo-like: a coarse colour field and grain
        coarse = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
        field = np.asarray(Image.fromarray(coarse).resize((IMAGE_SIDE, IMAGE_SIDE), Image.Resampling.BICUBIC))
        grain = rng.normal(0.0, 6.0, size=(IMAGE_SIDE, IMAGE_SIDE, 1))
        path = pool / f"c{i % NUM_CLASSES}" / f"{i:07d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((field + grain).clip(0, 255).astype(np.uint8)).save(path, quality=90)
    if count > written:
        (pool / ".count").write_text(str(count))
    for i in range(count):
        name = Path(f"c{i % NUM_CLASSES}") / f"{i:07d}.jpg"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.link(pool / name, folder / name)
    (folder / ".complete").touch()
    return folder


@dataclass
class ScaleRun:
    first_step_s: float
    epoch_train_s: float
    steady_ms: float  # per training image, `SteadyRate`
    steady_cpu_ms: float  # the same in CPU time of the training process
    wall_s: float
    main_peak_mib: float
    tree_peak_mib: float
    built: list[str]  # the results this run built (a second run: none)
    warm_setup_s: float = 0.0  # the data module's set-up in this process, every result cached (after run 2)
    loader_ms: float = 0.0  # per image, the training loader alone in this process (after run 2)
    loader_tree_mib: float = 0.0  # peak PSS of this process and its loader's workers meanwhile


def in_process(root: Path, state: Path, cache: str | None, run: ScaleRun, epochs: int) -> Any:
    """After the runs, in this process: the data set-up with every result cached (`warm_setup_s`), then the
    runs' epochs of the training loader alone, no model (`loader_ms` and `loader_tree_mib`): whether the
    input pipeline is what scales with size. Returns the data module, for `loader_ratios`."""
    dm = warm_setup(root, state, cache, run)
    run.loader_ms, run.loader_tree_mib = loader_pass(dm, epochs)
    return dm


def loader_pass(dm: Any, epochs: int) -> tuple[float, float]:
    """`epochs` epochs of `dm`'s training loader: ms an image (its `SteadyRate`) and the peak PSS of this
    process and its workers in MiB, sampled once a second."""
    rate, peak, sampled = SteadyRate(), 0, 0.0
    for _ in range(epochs):
        for index, (batch, _labels) in enumerate(dm.train_dataloader()):
            started = time.perf_counter()
            if started - sampled > 1.0:  # by time, not by batch: the same share of a small and a large epoch
                peak = max(peak, _tree_rss_kib(os.getpid())[1])
                sampled = time.perf_counter()
                rate.exclude(sampled - started)
            rate.batch_starts(index, len(batch))
    return (rate.seconds_per_image() or float("nan")) * 1e3, peak / 1024


def in_turn(pair: int, small: int, large: int) -> tuple[int, int]:
    """The order of pair `pair`'s two sizes: small-large, then large-small, and so on."""
    return (small, large) if pair % 2 == 0 else (large, small)


def loader_ratios(modules: dict[int, Any], pairs: int) -> list[float]:
    """The loader alone's per-image time, largest size over smallest, in `pairs` pairs of passes made in
    turn small-large and large-small, as `alternating_ratios` does for whole runs: an epoch of it lasts
    seconds, so the size-order figures above carry whatever the machine did in between."""
    small, large = min(modules), max(modules)
    ratios = []
    for pair in range(pairs):
        ms = {}
        for count in in_turn(pair, small, large):
            ms[count] = loader_pass(modules[count], epochs_for(count))[0]
        ratios.append(ms[large] / ms[small])
    return ratios


def warm_setup(root: Path, state: Path, cache: str | None, run: ScaleRun) -> Any:
    """The data module, set up with every result cached (listing, one stat a file, reading the results,
    splits), in `run.warm_setup_s` seconds: in this process, as a whole process adds seconds of imports and
    trainer set-up that hide it."""
    from lightning_resnet.data import ImageFolderDataModule

    dm = ImageFolderDataModule(  # the runs' settings (seed: conf/train.yaml's, which decides the splits)
        root=root, layout="classes", image_size=TRAIN_SIDE, normalize="auto", cache=cache, cache_dir=state,
        num_workers=2, augment_on="cpu", seed=SEED, batch_size=BATCH,
    )  # fmt: skip
    with logged_messages("lightning_resnet", logging.INFO) as messages:
        started = time.perf_counter()
        dm.setup("fit")
        elapsed = time.perf_counter() - started
    built = [name for name, line in BUILDS.items() if any(line in text for text in messages)]
    if built:  # then this is not the set-up of a run with everything cached
        raise RuntimeError(f"the in-process set-up built {', '.join(built)}: its settings differ from the runs'")
    run.warm_setup_s = elapsed
    return dm


def _tree_rss_kib(pid: int) -> tuple[int, int]:
    """(VmHWM of `pid`, proportional set size summed over `pid` and its descendants: a page shared by k
    processes counts 1/k in each, so the sum is the memory the tree takes), in KiB."""
    total, peak, pending = 0, 0, [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{current}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
            if current == pid:
                status = Path(f"/proc/{current}/status").read_text().splitlines()
                # an exited process not yet reaped (a zombie) has no VmHWM line: no figure from this sample
                peak = next((int(line.split()[1]) for line in status if line.startswith("VmHWM:")), 0)
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
    return peak, total


def train_once(root: Path, state: Path, cache: str | None, folder: Path, workers: int, epochs: int) -> ScaleRun:
    """One `python -m lightning_resnet` run to its end, watched from outside."""
    folder.mkdir(parents=True, exist_ok=True)
    clock_file, log = folder / "clock.json", folder / "output.log"
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, CLOCK_ENV: str(clock_file), "PYTHONPATH": path}
    command = [
        sys.executable, "-m", "lightning_resnet", "data=folder", f"data.root={root}", "data.layout=classes",
        f"data.image_size={TRAIN_SIDE}", f"data.batch_size={BATCH}", "data.normalize=auto",
        f"data.cache={cache or 'null'}", f"data.cache_dir={state}", f"data.num_workers={workers}",
        "finetune=linear_probe", f"trainer.max_epochs={epochs}", "test=false", f"hydra.run.dir={folder / 'run'}",
        "+callbacks.scale_clock._target_=benchmarks.scale.ScaleClock",  # by name: this may run as __main__
    ]  # fmt: skip
    started, clock = time.time(), time.perf_counter()
    with log.open("wb") as out:
        child = subprocess.Popen(command, cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT)
        ended: list[Any] = []
        waiter = threading.Thread(target=lambda: ended.extend([os.wait4(child.pid, 0), time.perf_counter()]))
        waiter.start()
        main_peak = tree_peak = 0
        while waiter.is_alive():
            main, tree = _tree_rss_kib(child.pid)
            main_peak, tree_peak = max(main_peak, main), max(tree_peak, tree)
            waiter.join(timeout=0.2)
    (_, status, _), wall = ended[0], ended[1] - clock
    text = log.read_text(errors="replace")
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"{' '.join(command)} failed; the end of {log}:\n" + "\n".join(text.splitlines()[-15:]))
    record = json.loads(clock_file.read_text())
    built = [name for name, line in BUILDS.items() if line in text]
    return ScaleRun(
        first_step_s=record["first_step_time"] - started,
        epoch_train_s=record["epoch_train_s"][0],
        steady_ms=record["steady_s_per_image"] * 1e3,
        steady_cpu_ms=record["steady_cpu_s_per_image"] * 1e3,
        wall_s=wall,
        main_peak_mib=main_peak / 1024,
        tree_peak_mib=tree_peak / 1024,
        built=built,
    )


def run(sizes: Sequence[int] = SIZES, workers: int = 2, pairs: int = PAIRS) -> list[Row]:
    import tempfile

    sizes = sorted(sizes)
    rows: list[Row] = []
    results: dict[tuple[int, str], tuple[ScaleRun, ScaleRun]] = {}
    modules: dict[tuple[int, str | None], Any] = {}  # the warm data modules, for `loader_ratios`
    folders = {count: scale_folder(count) for count in sizes}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        states = {(n, cache): Path(tmp) / f"state-{n}-{cache}" for n in sizes for cache in (None, "disk")}
        for count in sizes:
            for cache in (None, "disk"):
                state = states[count, cache]  # fresh: the first run builds everything
                label = f"cache={cache or 'null'}"
                runs = [Path(tmp) / f"{count}-{cache or 'null'}-{i}" for i in (1, 2)]  # no '=': a Hydra override
                epochs = epochs_for(count)
                first, second = (train_once(folders[count], state, cache, run, workers, epochs) for run in runs)
                modules[count, cache] = in_process(folders[count], state, cache, second, epochs)
                results[(count, label)] = first, second
                note = f"{count} x {IMAGE_SIDE} px JPEGs -> {TRAIN_SIDE} px, {workers} workers"
                cache_mib = count * 3 * TRAIN_SIDE * TRAIN_SIDE / 2**20
                added = [
                    Row("scale", f"{count} images, {label}: launch -> first step, first run", first.first_step_s, "s",
                        note + f"; built: {', '.join(first.built) or 'nothing'}"),
                    Row("scale", f"{count} images, {label}: launch -> first step, second run", second.first_step_s,
                        "s", f"rebuilt: {', '.join(second.built) or 'nothing (all reused)'}; the data set-up alone "
                        f"{second.warm_setup_s:.2f} s"),
                    Row("scale", f"{count} images, {label}: training epoch", first.epoch_train_s, "s",
                        f"{first.steady_ms:.3f} ms an image, steady over {epochs} epoch(s) (second run "
                        f"{second.steady_ms:.3f}); CPU of the training process {first.steady_cpu_ms:.3f} "
                        f"({second.steady_cpu_ms:.3f})"),
                    Row("scale", f"{count} images, {label}: training loader alone", second.loader_ms, "ms an image",
                        f"no model, in this process; peak PSS with its workers {second.loader_tree_mib:.0f} MiB"),
                    Row("scale", f"{count} images, {label}: peak RSS, main process", first.main_peak_mib, "MiB",
                        f"whole tree (workers too, PSS) {first.tree_peak_mib:.0f} MiB"
                        + (f"; cache file {cache_mib:.1f} MiB, memory-mapped" if cache else "")),
                ]  # fmt: skip
                rows += added
                print(format_table(added), flush=True)  # as they come: the 40k runs take minutes
        ratios = {}
        if len(sizes) > 1:
            for cache in (None, "disk"):
                warm = {n: states[n, cache] for n in sizes}
                wall, cpu = alternating_ratios(folders, warm, cache, workers, Path(tmp), pairs)
                loader = loader_ratios({n: modules[n, cache] for n in sizes}, pairs)
                ratios[f"cache={cache or 'null'}"] = wall, cpu, loader
    rows += summary(sizes, results, ratios)
    return rows


def alternating_ratios(
    folders: dict[int, Path], states: dict[int, Path], cache: str | None, workers: int, tmp: Path, pairs: int
) -> tuple[list[float], list[float]]:
    """Per-image steady time, largest size over smallest, from `pairs` pairs of warm runs made one right
    after the other (small-large, then large-small): a drift of the shared machine's speed over the
    section's 25 minutes falls on both sides of each ratio instead of on the size that ran last.
    The ratios of wall time and of the training process's CPU time, a value per pair each."""
    small, large = min(folders), max(folders)
    wall, cpu = [], []
    for pair in range(pairs):
        steady = {}
        for count in in_turn(pair, small, large):
            folder = tmp / f"pair{pair}-{count}-{cache or 'null'}"
            steady[count] = train_once(folders[count], states[count], cache, folder, workers, epochs_for(count))
        if any(run.built for run in steady.values()):
            raise RuntimeError(f"a warm run of pair {pair} rebuilt a cached result: its settings differ")
        wall.append(steady[large].steady_ms / steady[small].steady_ms)
        cpu.append(steady[large].steady_cpu_ms / steady[small].steady_cpu_ms)
    return wall, cpu


def rss_growth_row(label: str, small_mib: float, large_mib: float, small: int, large: int) -> Row:
    """The main process's peak RSS growth per image, extrapolated to 1.28 M images; a peak that fell
    from the small to the large size is no growth (run-to-run noise), not negative gigabytes."""
    name = f"1.28 M images, {label}: peak RSS growth, main process"
    per_image_kib = (large_mib - small_mib) * 1024 / (large - small)
    measured = f"lower peak of the two runs at each size: {small_mib:,.0f} MiB at {small}, {large_mib:,.0f} at {large}"
    if per_image_kib <= 0:
        return Row("scale", name, 0.0, "GiB", f"none measured ({measured})")
    gib = per_image_kib * IMAGENET / 1024**2
    return Row("scale", name, gib, "GiB", f"{per_image_kib:.2f} KiB an image ({measured})")


def summary(
    sizes: Sequence[int],
    results: dict[tuple[int, str], tuple[ScaleRun, ScaleRun]],
    ratios: dict[str, tuple[list[float], list[float], list[float]]],
) -> list[Row]:
    """The 40k/1k per-image ratio, RSS growth and each figure extrapolated to 1.28 M images."""
    rows: list[Row] = []
    small, large = sizes[0], sizes[-1]
    for label in ("cache=null", "cache=disk"):
        steady = {n: np.mean([r.steady_ms for r in results[(n, label)]]) for n in sizes}
        in_order = steady[large] / steady[small]
        loader_in_order = results[(large, label)][1].loader_ms / results[(small, label)][1].loader_ms
        loader_note = "no model, in this process, in size order"
        loader = loader_in_order
        if label in ratios:
            wall, cpu, loader_pairs = ratios[label]
            loader = float(np.median(loader_pairs))
            loader_note = (
                f"no model, in this process: median of {len(loader_pairs)} alternating pairs of passes "
                f"({_listed(loader_pairs)}); in size order {loader_in_order:.2f}"
            )
            rows += [
                Row("scale", f"ratio per-image epoch time {large}/{small}, {label}", float(np.median(wall)), "",
                    f"target 0.9-1.1: median of {len(wall)} alternating pairs of warm runs ({_listed(wall)}); "
                    f"the runs above, in size order: {in_order:.2f}"),
                Row("scale", f"ratio per-image CPU time of the training process {large}/{small}, {label}",
                    float(np.median(cpu)), "", f"the same pairs ({_listed(cpu)}): the work per image, without the "
                    "time spent waiting"),
            ]  # fmt: skip
        rows += [
            Row("scale", f"ratio per-image time of the training loader alone {large}/{small}, {label}", loader, "",
                loader_note),
        ]  # fmt: skip
        if len(sizes) < 2:
            continue
        first, second = results[(large, label)]  # per image at the largest size: the constants matter least
        build = (first.first_step_s - second.first_step_s) / large  # verification, statistics (, cache)
        # each size's lower peak of its two runs: a whole process's peak varies by ~100 MiB from run to run
        peak = {n: min(r.main_peak_mib for r in results[(n, label)]) for n in (small, large)}
        epoch_h = float(steady[large]) * IMAGENET * 0.8 / 1e3 / 3600  # 80 % train
        rows += [
            Row("scale", f"1.28 M images, {label}: building on the first run", build * IMAGENET / 60, "min",
                f"{build * 1e3:.2f} ms an image at {IMAGE_SIDE} px, first minus second run at {large} "
                "(decoding: scales with JPEG size and cores)"),
            Row("scale", f"1.28 M images, {label}: data set-up on the second run", second.warm_setup_s / large
                * IMAGENET, "s", f"{second.warm_setup_s / large * 1e6:.0f} us an image (listing, one stat a file, "
                "reading the results); plus imports and trainer set-up"),
            Row("scale", f"1.28 M images, {label}: training epoch", epoch_h, "h",
                f"at {TRAIN_SIDE} px with a frozen backbone, per image at {large}"),
            rss_growth_row(label, peak[small], peak[large], small, large),
        ]  # fmt: skip
    at_224 = f"{IMAGENET * 3 * 224**2 / 1e9:.0f} GB at 224 px"
    rows.append(
        Row("scale", f"1.28 M images: pixel cache at {TRAIN_SIDE} px", IMAGENET * 3 * TRAIN_SIDE**2 / 1e9, "GB", at_224)
    )
    return rows


def _listed(values: Sequence[float]) -> str:
    return ", ".join(f"{value:.2f}" for value in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma-separated image counts")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=PAIRS, help="alternating pairs of warm runs for the ratio")
    args = parser.parse_args()
    print(format_table(run([int(s) for s in args.sizes.split(",")], args.workers, args.pairs)), flush=True)


if __name__ == "__main__":
    main()
