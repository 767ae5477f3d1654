"""A run folder belongs to one live run: a lock naming its holder, and no silent reuse of earlier results.

Used by the train task before it builds anything; Lightning's DDP ranks > 0 run in the folder their
rank 0 owns and skip all of it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from omegaconf import DictConfig

from lightning_resnet.errors import ConfigError

log = logging.getLogger(__name__)

LOCK_FILE = ".run.lock"  # in the run folder: the pid of the live run that owns it


def is_rank_zero() -> bool:
    """Whether this process is the main one, from the variables launchers set (as Lightning's `_get_rank`):
    Lightning's DDP children re-run the command with LOCAL_RANK > 0 in the folder rank 0 owns."""
    rank = next(
        (os.environ[key] for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK") if key in os.environ),
        "0",
    )
    return int(rank) == 0 and int(os.environ.get("NODE_RANK") or 0) == 0


def lock_run_folder(output_dir: Path) -> IO[str]:
    """An exclusive `flock` on `<output_dir>/.run.lock`, which then names this process; the open file holds it.

    The kernel drops the lock when the process ends, however it ends, so a killed run's folder is free.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / LOCK_FILE
    file = path.open("a+")
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        file.close()
        holder = ""
        for _ in range(20):  # the holder writes its name right after taking the lock
            holder = path.read_text().strip()
            if holder:
                break
            time.sleep(0.05)
        raise ConfigError(
            f"{output_dir} is in use by another run ({holder or 'holder unknown'}, {path}); wait for it to end "
            "or choose another hydra.run.dir"
        ) from None
    file.seek(0)
    file.truncate()
    file.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    file.flush()
    return file


def earlier_results(output_dir: Path) -> list[Path]:
    """What an earlier run left in the folder that this run would overwrite or mix with its own:
    `metrics.json`, `history.json`, a `checkpoints/` folder with checkpoints."""
    checkpoints = output_dir / "checkpoints"
    found = [p for p in (output_dir / "metrics.json", output_dir / "history.json") if p.is_file()]
    if checkpoints.is_dir() and any(checkpoints.glob("*.ckpt")):
        found.append(checkpoints)
    return found


def logger_folders(cfg: DictConfig, output_dir: Path) -> list[Path]:
    """The loggers' own folders inside the run folder (`tensorboard/`, `csv/`), never the run folder itself."""
    folders = []
    for node in (cfg.get("logger") or {}).values():
        if node and node.get("save_dir") and node.get("name"):
            folder = Path(node.save_dir) / str(node.name)
            if folder.resolve().is_relative_to(output_dir.resolve()) and folder.resolve() != output_dir.resolve():
                folders.append(folder)
    return folders


@contextmanager
def own_run_folder(cfg: DictConfig, output_dir: Path, resuming: bool) -> Iterator[None]:
    """The run folder for this run alone, for as long as it runs.

    A second live run in the folder fails at once, naming the holder (`lock_run_folder`). A folder with an
    earlier run's results (`metrics.json`, `history.json`, checkpoints) is only continued (`ckpt_path`),
    or started over with `overwrite=true`, which deletes those results and the loggers' folders first.
    Ranks > 0 of a DDP run skip all this: they run in the folder their rank 0 owns.
    """
    if not is_rank_zero():
        yield
        return
    lock = lock_run_folder(output_dir)
    try:
        earlier = [] if resuming else earlier_results(output_dir)
        if earlier and not cfg.get("overwrite", False):
            names = ", ".join(p.name for p in earlier)
            raise ConfigError(
                f"{output_dir} holds the results of an earlier run ({names}); continue it with ckpt_path=last, "
                "choose another hydra.run.dir, or pass overwrite=true to delete them and start over"
            )
        if earlier:
            for path in [*earlier, *logger_folders(cfg, output_dir)]:
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
            log.warning(
                "overwrite=true: deleted the earlier run's %s in %s", ", ".join(p.name for p in earlier), output_dir
            )
        yield
    finally:
        lock.close()
