"""Shared helpers: a result row type, the table printer, and the results file."""

from __future__ import annotations

import datetime as dt
import platform
from dataclasses import dataclass
from pathlib import Path

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
    """Append the table to the machine's results file of the day (a second run adds to it, never erases)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{machine_name()}-{dt.date.today().isoformat()}.md"
    separator = "\n" if path.is_file() else ""
    with path.open("a") as file:
        file.write(f"{separator}{header}\n\n{format_table(rows)}\n")
    return path
