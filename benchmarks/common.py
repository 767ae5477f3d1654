"""Shared helpers: a result row type, the table printer, and the results file."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import platform
from collections.abc import Iterator
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


class _Messages(logging.Handler):
    def __init__(self, messages: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.messages = messages

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def logged_messages(logger_name: str, level: int = logging.DEBUG) -> Iterator[list[str]]:
    """The messages `logger_name` (and its children) log at `level` or above meanwhile, whatever the
    logging set-up says: how a bench learns what the code under test did (built a cache, fell back)."""
    messages: list[str] = []
    handler, logger = _Messages(messages), logging.getLogger(logger_name)
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
