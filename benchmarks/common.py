"""Shared helpers: a result row type, the table printer, the results file, and a step timer."""

from __future__ import annotations

import datetime as dt
import itertools
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Row:
    section: str
    name: str
    value: float | str
    unit: str = ""
    note: str = ""


def machine_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0).replace(" ", "-").lower()
    return f"cpu{torch.get_num_threads()}-{platform.machine()}"


def format_table(rows: list[Row]) -> str:
    lines = ["| section | figure | value | unit | note |", "|---|---|---|---|---|"]
    for r in rows:
        value = f"{r.value:,.3f}" if isinstance(r.value, float) else str(r.value)
        lines.append(f"| {r.section} | {r.name} | {value} | {r.unit} | {r.note} |")
    return "\n".join(lines)


def write_results(rows: list[Row], header: str) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{machine_name()}-{dt.date.today().isoformat()}.md"
    path.write_text(f"{header}\n\n{format_table(rows)}\n")
    return path


class StepTimer(pl.Callback):
    """perf_counter at the end of every training batch."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_train_batch_end(self, *args: object) -> None:
        self.ends.append(time.perf_counter())


def median_rate(ends: list[float], warmup: int, batch_size: int) -> float:
    """Images/s at the median interval between step ends, after `warmup` steps (robust to load bursts)."""
    intervals = [later - earlier for earlier, later in itertools.pairwise(ends[warmup:])]
    return batch_size / statistics.median(intervals)
