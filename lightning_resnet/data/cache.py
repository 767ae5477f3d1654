"""Small JSON results cached beside a dataset, keyed by a fingerprint of the files they came from.

Used for `normalize: auto` statistics and image verification, so they are computed once per file
list and recomputed as soon as a file is added, removed, replaced or touched.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def fingerprint(paths: Iterable[str | Path], *extra: object) -> str:
    """Hash of every file's path, size and modification time (plus `extra` settings, e.g. the image size).

    A path that cannot be read (a dangling symbolic link) counts by what it points to, so fingerprinting
    never fails: naming it is the image check's job, which is what this key caches.
    """
    digest = hashlib.sha256(repr(extra).encode())
    for path in sorted(str(p) for p in paths):
        digest.update(f"{path}\t{_stamp(path)}\n".encode())
    return digest.hexdigest()[:24]


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
        """Write atomically (parallel sweep jobs may write the same entry)."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=self.directory, suffix=".tmp", delete=False) as file:
                json.dump(value, file)
            os.replace(file.name, self._path(kind, key))
        except OSError as err:
            log.warning(
                "cannot cache %s in %s (%s); set data.cache_dir to a writable folder", kind, self.directory, err
            )
