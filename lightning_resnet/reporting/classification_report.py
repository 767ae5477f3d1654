"""Per-class precision, recall, F1 and support, with accuracy and macro/weighted averages.

The figures are scikit-learn's own `classification_report` (every class listed, a class never predicted
scores 0), so the files read like the report researchers already know, as CSV for tables and Markdown for notes.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import torch

COLUMNS = ("precision", "recall", "f1", "support")


def confusion_matrix(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts, rows = true class, columns = predicted class; a tensor, as the report's callers expect."""
    from sklearn import metrics  # here, not at import: scikit-learn's metrics only for the report

    counts = metrics.confusion_matrix(targets.cpu().numpy(), preds.cpu().numpy(), labels=range(num_classes))
    return torch.from_numpy(counts)


def classification_report(
    preds: torch.Tensor, targets: torch.Tensor, class_names: Sequence[str]
) -> dict[str, dict[str, float]]:
    """`{class name | "accuracy" | "macro avg" | "weighted avg": {precision, recall, f1, support}}`.

    scikit-learn's `output_dict` reshaped for the writers: "f1-score" becomes "f1", and accuracy (a bare
    float there) becomes a row with the same figure in every score column and the total as support.
    """
    from sklearn import metrics

    sk = metrics.classification_report(
        targets.cpu().numpy(),
        preds.cpu().numpy(),
        labels=range(len(class_names)),
        target_names=list(class_names),
        output_dict=True,
        zero_division=0,
    )
    total = len(targets)
    report = {
        name: {
            "precision": float(row["precision"]),
            "recall": float(row["recall"]),
            "f1": float(row["f1-score"]),
            "support": int(row["support"]),
        }
        for name, row in sk.items()
        if name != "accuracy"
    }
    accuracy = float(sk["accuracy"])
    report["accuracy"] = {"precision": accuracy, "recall": accuracy, "f1": accuracy, "support": total}
    order = [*class_names, "accuracy", "macro avg", "weighted avg"]  # the writers' row order
    return {name: report[name] for name in order}


def write_report_csv(report: dict[str, dict[str, float]], path: Path) -> None:
    with Path(path).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["class", *COLUMNS])
        for name, row in report.items():
            writer.writerow([name, *(f"{row[c]:.6f}" if c != "support" else row[c] for c in COLUMNS)])


def write_report_markdown(report: dict[str, dict[str, float]], path: Path) -> None:
    lines = ["| class | " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * len(COLUMNS)]
    for name, row in report.items():
        cells = [f"{row[c]:.4f}" if c != "support" else str(row[c]) for c in COLUMNS]
        if name == "accuracy":  # one figure, as in scikit-learn's text report
            cells = ["", "", cells[2], cells[3]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    Path(path).write_text("\n".join(lines) + "\n")
