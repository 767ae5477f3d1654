"""Best over epochs, computed one way for `metrics.json`, the curves, fine-tuning phases and TensorBoard.

A history is the list `MetricHistory` keeps and writes to `history.json`: one dict per epoch, with
`epoch` and the epoch's `train/*`, `val/*` and `lr/*` values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

History = Sequence[dict[str, Any]]


def metric_mode(name: str) -> str:
    """`min` for losses, `max` for every other metric we log (accuracy, F1, precision, recall)."""
    return "min" if name.endswith("loss") else "max"


def best_row(history: History, key: str, mode: str | None = None) -> dict[str, Any] | None:
    """The epoch's row with the best `key` (`mode` max/min, default by the metric's name); the first on ties."""
    rows = [row for row in history if key in row]
    if not rows:
        return None
    pick = max if (mode or metric_mode(key)) == "max" else min
    return pick(rows, key=lambda row: row[key])


def best_value(history: History, key: str, mode: str | None = None) -> float | None:
    row = best_row(history, key, mode)
    return None if row is None else float(row[key])


def best_epoch(history: History, monitor: str, mode: str) -> int | None:
    """The epoch the checkpoint callback would pick by `monitor`; None when it was never logged."""
    row = best_row(history, monitor, mode)
    return None if row is None else int(row["epoch"])
