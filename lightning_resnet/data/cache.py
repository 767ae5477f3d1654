"""Results cached beside a dataset, keyed by a fingerprint of the files they came from, built once.

Used for `normalize: auto` statistics, image verification and the disk pixel cache, so they are
computed once per file list and recomputed as soon as a file is added, removed, replaced or touched.

One build for many processes: DDP ranks (on one node or many sharing the data folder) and parallel sweep
jobs that miss the same entry at once would each build it. `exclusive` makes one of them the builder,
holding `fcntl.flock` on a lock file beside the result; the others log whom they wait for, block, then
read (or memory-map) what it wrote. The kernel releases a flock when its process dies, so a killed
builder leaves no stale lock: the next process takes over. Limits: local file systems and NFS (Linux
emulates flock with NFS byte-range locks, which needs the lock daemon: not with `nolock`); Lustre only
mounted with `-o flock` (`localflock` locks within one node only); GPFS and BeeGFS have flock. Where
locking fails (or on Windows, without `fcntl`), a warning says so and every process builds for itself,
which is still safe: each result is written to a temporary file and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

T = TypeVar("T")
STAT_CHUNK = 4096  # paths per thread task when stamping (stat is a network round trip on NFS)


def fingerprint(paths: Iterable[str | Path], *extra: object, within: str | None = None, threads: int = 1) -> str:
    """Hash of every file's path, size and modification time (plus `extra` settings, e.g. the image size).

    A path that cannot be read (a dangling symbolic link) counts by what it points to, so fingerprinting
    never fails: naming it is the image check's job, which is what this key caches. `within`: the
    fingerprint of a file list that holds every one of `paths`, computed before: it already changes with
    any of their files, so they are hashed by name only, with no second `stat` of each (1.28 M of them
    take seconds on a local disk, minutes on NFS). `threads` stat in parallel (NFS round trips overlap).
    """
    names = sorted(str(p) for p in paths)
    digest = hashlib.sha256(repr(extra).encode())
    if within is not None:
        digest.update(f"within {within}\n".encode())
        for name in names:
            digest.update(f"{name}\n".encode())
        return digest.hexdigest()[:24]
    chunks = [names[start : start + STAT_CHUNK] for start in range(0, len(names), STAT_CHUNK)]
    with ThreadPoolExecutor(max(1, min(threads, len(chunks)))) as pool:
        for chunk, stamps in zip(chunks, pool.map(_stamps, chunks), strict=True):
            digest.update("".join(f"{name}\t{stamp}\n" for name, stamp in zip(chunk, stamps, strict=True)).encode())
    return digest.hexdigest()[:24]


def _stamps(paths: Sequence[str]) -> list[str]:
    return [_stamp(path) for path in paths]


def _stamp(path: str) -> str:
    """`size<TAB>mtime_ns`, or the symbolic link's target when there is no file behind it."""
    try:
        stat = os.stat(path)
    except OSError:
        try:
            return f"unreadable\t{os.readlink(path)}"
        except OSError:
            return "missing"
    return f"{stat.st_size}\t{stat.st_mtime_ns}"


@contextmanager
def exclusive(lock_path: str | Path, what: str) -> Iterator[bool]:
    """Hold an exclusive `flock` on `lock_path` (created if needed) while building `what`; yields whether
    it is held. A process that finds it held logs the holder (host and pid) and waits. Never raises for
    want of locking: a folder that cannot be written or a file system without flock yields False."""
    lock_path = Path(lock_path)
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:
        log.debug("no lock for %s (%s): building without one", what, err)
        yield False
        return
    try:
        held = _lock(fd, lock_path, what)
        if held:
            holder = f"{socket.gethostname()} pid {os.getpid()}".encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, holder, 0)
        yield held
    finally:
        os.close(fd)  # releases the lock; the file stays (deleting it would let two processes lock two files)


def _lock(fd: int, lock_path: Path, what: str) -> bool:
    if fcntl is None:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            log.info("waiting for %s, which is building %s (lock %s)", holder, what, lock_path)
            fcntl.flock(fd, fcntl.LOCK_EX)
            log.info("%s: built by %s; reading it", what, holder)
    except OSError as err:  # ENOLCK, ENOSYS, EOPNOTSUPP: a file system without flock (Lustre without -o flock)
        log.warning(
            "cannot lock %s (%s): processes sharing this folder may each build %s; "
            "point data.cache_dir at a local or flock-capable file system",
            lock_path,
            err,
            what,
        )
        return False
    return True


class ResultCache:
    """`<directory>/<kind>-<fingerprint>.json` files; a directory that cannot be written disables caching."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def _path(self, kind: str, key: str) -> Path:
        return self.directory / f"{kind}-{key}.json"

    def get(self, kind: str, key: str) -> Any | None:
        try:
            return json.loads(self._path(kind, key).read_text())
        except (OSError, ValueError):
            return None

    def put(self, kind: str, key: str, value: Any) -> None:
        """Write atomically (a reader never sees half a file)."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=self.directory, suffix=".tmp", delete=False) as file:
                json.dump(value, file)
            os.replace(file.name, self._path(kind, key))
        except OSError as err:
            log.warning(
                "cannot cache %s in %s (%s); set data.cache_dir to a writable folder", kind, self.directory, err
            )

    def get_or_build(self, kind: str, key: str, build: Callable[[], T], refresh: bool = False) -> T | Any:
        """The cached entry, or `build()`'s result cached: by one process at a time (`exclusive`), so processes
        missing it together build it once and the others read it. `refresh`: build even if it is cached."""
        if not refresh:
            cached = self.get(kind, key)
            if cached is not None:
                return cached
        with exclusive(self._path(kind, key).with_suffix(".lock"), f"{kind} results"):
            cached = None if refresh else self.get(kind, key)  # built while this process waited
            if cached is not None:
                return cached
            value = build()
            self.put(kind, key, value)
        return value
