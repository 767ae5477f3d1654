"""Several processes, one build: verification, `normalize: auto` statistics and the disk pixel cache are
built by the process holding the lock beside them; the others wait, then read the same result. A killed
builder leaves no stale lock; where flock is missing every process builds for itself, safely."""

from __future__ import annotations

import errno
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from lightning_resnet.data import ImageFolderDataModule, cache, pixels
from lightning_resnet.data.cache import ResultCache, exclusive
from lightning_resnet.errors import ConfigError
from tests.miniature import write_image


def write_folder(root: Path, per_class: int = 8) -> Path:
    rng = np.random.default_rng(0)
    for tint, name in enumerate(("a", "b")):
        for i in range(per_class):
            write_image(root / name / f"{i}.jpg", rng, tint, (40 + 3 * i, 32))
    whole = (root / "a" / "0.jpg").read_bytes()
    (root / "b" / "truncated.jpg").write_bytes(whole[: len(whole) // 2])  # a bad file both must leave out
    return root


def _counted(name: str, marker: Path, function):
    def wrapper(*args, **kwargs):
        with open(marker, "a") as file:  # O_APPEND: one line per call, whichever process
            file.write(f"{name} {os.getpid()}\n")
        return function(*args, **kwargs)

    return wrapper


def _set_up_in_child(root: str, marker: str, log_file: str, barrier, results) -> None:
    """One racing process (as a DDP rank or a sweep job is): count the builds, then set up."""
    from lightning_resnet.data import folder

    logging.basicConfig(filename=log_file, level=logging.INFO, format="%(message)s", force=True)
    folder.find_bad_images = _counted("verify", Path(marker), folder.find_bad_images)
    folder.channel_mean_std = _counted("normalize", Path(marker), folder.channel_mean_std)
    pixels._fill = _counted("pixels", Path(marker), pixels._fill)
    barrier.wait()  # both start setting up at the same moment
    dm = ImageFolderDataModule(
        root=root, layout="classes", image_size=16, batch_size=4, num_workers=0, normalize="auto",
        cache="disk", bad_images="skip", augment_on="cpu",
    )  # fmt: skip
    dm.setup("fit")
    train = dm.datasets["train"]
    used = sorted({str(p) for split in dm.datasets.values() for p in split.paths})
    results.put((dm.mean, dm.std, str(train.pixels.path), int(train.pixels.array.sum()), used))


def test_two_processes_racing_on_a_fresh_folder_build_everything_once(tmp_path):
    root = write_folder(tmp_path / "data")
    marker, context = tmp_path / "builds.txt", multiprocessing.get_context("fork")  # own fds, own locks
    barrier, results = context.Barrier(2), context.Queue()
    logs = [tmp_path / f"child{i}.log" for i in range(2)]
    children = [
        context.Process(target=_set_up_in_child, args=(str(root), str(marker), str(log), barrier, results))
        for log in logs
    ]
    for child in children:
        child.start()
    outcomes = [results.get(timeout=120) for _ in children]
    for child in children:
        child.join(timeout=30)
        assert child.exitcode == 0
    builds = marker.read_text().split()[::2]
    assert sorted(builds) == ["normalize", "pixels", "verify"]  # each once, in total
    assert outcomes[0] == outcomes[1]  # the same statistics, pixel file, pixels and files
    assert not any("truncated" in path for path in outcomes[0][4]) and len(outcomes[0][4]) == 16
    assert not list((root / ".lightning_resnet").glob("*.tmp*"))
    texts = [log.read_text() for log in logs]
    assert sum("checking 17 images" in text for text in texts) == 1  # the builder's log line, in one log only


def test_a_process_finding_the_lock_held_says_whom_it_waits_for_and_reads_the_result(tmp_path, caplog):
    results, built = ResultCache(tmp_path), []
    holding, release = threading.Event(), threading.Event()

    def builder() -> None:  # another open file description: flock conflicts as between processes
        with exclusive(tmp_path / "normalize-k.lock", "normalize results"):
            holding.set()
            release.wait(10)
            results.put("normalize", "k", {"mean": [0.5]})

    def waiter() -> None:
        built.append(results.get_or_build("normalize", "k", lambda: {"mean": ["built twice"]}))

    first = threading.Thread(target=builder)
    first.start()
    assert holding.wait(10)
    with caplog.at_level(logging.INFO, logger="lightning_resnet.data.cache"):
        second = threading.Thread(target=waiter)
        second.start()
        deadline = time.monotonic() + 10
        while "waiting for" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.01)
        release.set()
        first.join(10)
        second.join(10)
    assert f"waiting for {os.uname().nodename} pid {os.getpid()}" in caplog.text
    assert built == [{"mean": [0.5]}]  # read, not built again


def test_a_killed_builder_leaves_no_stale_lock(tmp_path):
    lock = tmp_path / "verified-k.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import fcntl, time; f = open({str(lock)!r}, 'w'); fcntl.flock(f, fcntl.LOCK_EX); "
         "print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "locked"
    os.kill(holder.pid, signal.SIGKILL)  # killed mid-build: the kernel drops its lock
    holder.wait(10)
    done: list[object] = []
    thread = threading.Thread(target=lambda: done.append(ResultCache(tmp_path).get_or_build("verified", "k", dict)))
    thread.start()
    thread.join(10)
    assert not thread.is_alive() and done == [{}]


def test_without_flock_every_process_builds_and_says_so(tmp_path, monkeypatch, caplog):
    def no_flock(*args):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(cache.fcntl, "flock", no_flock)
    with caplog.at_level(logging.WARNING):
        assert ResultCache(tmp_path).get_or_build("normalize", "k", lambda: {"mean": [1.0]}) == {"mean": [1.0]}
    assert "cannot lock" in caplog.text and "data.cache_dir" in caplog.text
    assert ResultCache(tmp_path).get("normalize", "k") == {"mean": [1.0]}


def test_set_up_stats_each_file_once_and_a_second_set_up_rebuilds_nothing(tmp_path, monkeypatch):
    """One stat per file for the verification, statistics and pixel cache keys together (1.28 M stats take
    minutes on NFS); a second set-up reads all three back."""
    from lightning_resnet.data import folder

    root = write_folder(tmp_path / "data")
    (root / "b" / "truncated.jpg").unlink()
    stamped: list[str] = []
    stamp = cache._stamp
    monkeypatch.setattr(cache, "_stamp", lambda path: stamped.append(path) or stamp(path))
    settings = {"layout": "classes", "image_size": 16, "num_workers": 0, "normalize": "auto", "cache": "disk"}
    first = ImageFolderDataModule(root=root, **settings)
    first.setup("fit")
    assert sorted(stamped) == sorted(str(p) for p in root.glob("*/*.jpg"))
    files = sorted(p.name.split("-")[0] for p in (root / ".lightning_resnet").iterdir() if p.suffix != ".lock")
    assert files == ["normalize", "pixels", "verified"]
    for module, name in ((folder, "find_bad_images"), (folder, "channel_mean_std"), (pixels, "_fill")):
        monkeypatch.setattr(module, name, lambda *args, name=name: pytest.fail(f"{name} ran again"))
    again = ImageFolderDataModule(root=root, **settings)
    again.setup("fit")
    assert len(stamped) == 32 and again.mean == first.mean and again.std == first.std


def test_a_cache_that_cannot_fit_is_refused_before_decoding_with_its_predicted_size(tmp_path, monkeypatch, caplog):
    root = write_folder(tmp_path / "data")
    (root / "b" / "truncated.jpg").unlink()
    monkeypatch.setattr(pixels, "_fill", lambda *args: pytest.fail("decoded a cache that cannot fit"))
    monkeypatch.setattr(pixels, "_free_disk", lambda directory: 1000)
    with pytest.raises(ConfigError, match=r"data.cache=disk: 16 images at 16 px \(16 x 3 x 16 x 16 bytes"):
        ImageFolderDataModule(root=root, layout="classes", image_size=16, num_workers=0, cache="disk").setup("fit")
    monkeypatch.setattr(pixels, "_available_memory", lambda: 1000)
    with pytest.raises(ConfigError, match="data.cache=memory.*data.cache=disk"):
        ImageFolderDataModule(root=root, layout="classes", image_size=16, num_workers=0, cache="memory").setup("fit")
