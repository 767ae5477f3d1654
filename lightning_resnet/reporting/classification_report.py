"""Per-class precision, recall, F1 and support, with accuracy and macro/weighted averages.

The numbers come from torchmetrics and follow scikit-learn's `classification_report` layout (all
classes listed, a class never predicted scores 0), so the files read like the report researchers
already know, as CSV for tables and Markdown for notes.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import torch
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

COLUMNS = ("precision", "recall", "f1", "support")


def confusion_matrix(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts, rows = true class, columns = predicted class."""
    return multiclass_confusion_matrix(preds, targets, num_classes)


def classification_report(
    preds: torch.Tensor, targets: torch.Tensor, class_names: Sequence[str]
) -> dict[str, dict[str, float]]:
    """`{class name | "accuracy" | "macro avg" | "weighted avg": {precision, recall, f1, support}}`."""
    num_classes = len(class_names)
    per_class = {
        "precision": multiclass_precision(preds, targets, num_classes, average=None),
        "recall": multiclass_recall(preds, targets, num_classes, average=None),
        "f1": multiclass_f1_score(preds, targets, num_classes, average=None),
    }
    support = torch.bincount(targets, minlength=num_classes).double()
    report = {
        name: {**{k: float(v[i]) for k, v in per_class.items()}, "support": int(support[i])}
        for i, name in enumerate(class_names)
    }
    total = int(support.sum())
    accuracy = float(multiclass_accuracy(preds, targets, num_classes, average="micro"))
    report["accuracy"] = {"precision": accuracy, "recall": accuracy, "f1": accuracy, "support": total}
    # Averaged over every class, as scikit-learn does when `labels` lists them all.
    report["macro avg"] = {k: float(v.double().mean()) for k, v in per_class.items()} | {"support": total}
    weights = support / support.sum().clamp(min=1)
    report["weighted avg"] = {k: float((v.double() * weights).sum()) for k, v in per_class.items()} | {"support": total}
    return report


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
