"""Turn a test pass (a `OutputCollector`) into the report files of a run directory.

Files: `classification_report.{csv,md}`, `predictions.csv`, `confusion_matrix.png`, `curves.png`
(when there is a history), `embedding.png`, `mistakes.png`. Returns a JSON-ready summary (for
`metrics.json`) and the PNG files, for TensorBoard.

`start_report` computes every figure's data and the summary, starts a forked process drawing the
costliest figures (`FIGURES_IN_CHILD`), writes the tables and returns: the caller logs to TensorBoard
meanwhile, and `PendingReport.finish` draws the other figures here and waits for the child.
`write_report` does both in one call.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightning_resnet.reporting import figures
from lightning_resnet.reporting.classification_report import (
    classification_report,
    confusion_matrix,
    write_report_csv,
    write_report_markdown,
)
from lightning_resnet.reporting.collector import OutputCollector
from lightning_resnet.reporting.embedding import project_2d, silhouette, subsample

log = logging.getLogger(__name__)

# Drawn by the child: at 10 classes the confusion matrix takes ~0.5 s (two panels of annotated cells,
# colour bars, constrained layout) and the embedding ~0.1 s; the curves ~0.2 s and the mistakes ~0.1 s
# are drawn here, after the caller's TensorBoard logging.
FIGURES_IN_CHILD = ("confusion_matrix", "embedding")
TABLES = ("classification_report.csv", "classification_report.md")  # listed in the summary's files


@dataclass
class Report:
    summary: dict[str, Any]
    figures: dict[str, Path] = field(default_factory=dict)  # name -> PNG file


@dataclass
class PendingReport:
    """A report with its summary and tables written and its figures under way; `finish` completes it."""

    summary: dict[str, Any]
    out_dir: Path
    drawings: dict[str, figures.Drawing] = field(default_factory=dict)  # drawn here by `finish`
    child: figures.FigureProcess | None = None
    order: list[str] = field(default_factory=list)  # every figure's name, in the order of `Report.figures`

    def finish(self) -> Report:
        """Draw this process's figures and wait for the child's: the report with every PNG file."""
        pngs = figures.save_figures(self.drawings, self.out_dir)
        if self.child is not None:
            pngs.update(self.child.join())
        return Report(self.summary, {name: pngs[name] for name in self.order})


def write_predictions_csv(path: Path, probs: torch.Tensor, targets: torch.Tensor, class_names: Sequence[str]) -> None:
    """One row per test sample, in test order: true and predicted class, confidence."""
    confidence, predicted = probs.max(dim=1)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "target", "predicted", "confidence"])
        for i, (t, p, c) in enumerate(zip(targets.tolist(), predicted.tolist(), confidence.tolist(), strict=True)):
            writer.writerow([i, class_names[t], class_names[p], f"{c:.6f}"])


def write_report(*args: Any, **kwargs: Any) -> Report:
    """Every report file at once: `start_report(...).finish()`, for callers with nothing to do meanwhile."""
    return start_report(*args, **kwargs).finish()


def start_report(
    collector: OutputCollector,
    class_names: Sequence[str],
    out_dir: Path,
    history: Sequence[dict[str, Any]] | None,
    monitor: str,
    monitor_mode: str,
    embedding: str = "pca",
    max_points: int = 5000,
    seed: int = 0,
    figure_process: bool = True,
) -> PendingReport:
    """The summary and the tables now; the figures started, the costliest in a forked child when
    `figure_process` (else all drawn by `finish`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    logits, targets, features, _ = collector.stacked()
    if not len(targets):
        log.warning("no test samples were seen: no report written")
        return PendingReport({"samples": 0}, out_dir)
    probs = logits.softmax(dim=1)
    predicted = probs.argmax(dim=1)
    report = classification_report(predicted, targets, class_names)

    chosen = subsample(len(targets), max_points, seed)
    feats, labels = features[chosen].numpy(), targets[chosen].numpy()
    score = silhouette(feats, labels, max_points, seed)
    score_text = f"{score:.3f}" if score is not None else "n/a"
    drawings = figure_drawings(
        collector,
        class_names,
        confusion_matrix(predicted, targets, len(class_names)).numpy(),
        history,
        (monitor, monitor_mode),
        (project_2d(feats, embedding, seed), labels),
        f"penultimate features ({embedding.upper()}, {len(chosen)} test images), silhouette {score_text}",
    )
    in_child = {name: draw for name, draw in drawings.items() if name in FIGURES_IN_CHILD}
    child = figures.FigureProcess(in_child, out_dir, enabled=figure_process)

    write_report_csv(report, out_dir / "classification_report.csv")
    write_report_markdown(report, out_dir / "classification_report.md")
    write_predictions_csv(out_dir / "predictions.csv", probs, targets, class_names)
    summary = {
        "samples": len(targets),
        "accuracy": report["accuracy"]["f1"],
        "macro_f1": report["macro avg"]["f1"],
        "weighted_f1": report["weighted avg"]["f1"],
        "silhouette": score,
        "embedding": embedding,
        "mistakes": int((predicted != targets).sum()),
        "files": sorted([*(f"{name}.png" for name in drawings), *TABLES]),
    }
    log.info("report written to %s (silhouette of test features: %s)", out_dir, score_text)
    here = {name: draw for name, draw in drawings.items() if name not in in_child}
    return PendingReport(summary, out_dir, here, child, list(drawings))


def figure_drawings(
    collector: OutputCollector,
    class_names: Sequence[str],
    counts: np.ndarray,
    history: Sequence[dict[str, Any]] | None,
    monitor: tuple[str, str],
    embedding: tuple[np.ndarray, np.ndarray],
    embedding_title: str,
) -> dict[str, figures.Drawing]:
    """{figure name: function drawing it}, in file order; each holds numpy data and lists only, so that it
    can run in a forked child (which must not run torch: its thread pools do not survive a fork)."""
    names = list(class_names)
    drawings: dict[str, figures.Drawing] = {"confusion_matrix": lambda: figures.confusion_matrix_figure(counts, names)}
    if history:
        rows = [dict(row) for row in history]
        drawings["curves"] = lambda: figures.curves_figure(rows, *monitor)
    else:
        log.info("no per-epoch history (a run without MetricHistory): curves.png skipped")
    points, labels = embedding
    drawings["embedding"] = lambda: figures.embedding_figure(points, labels, names, embedding_title)
    mistakes = collector.mistakes
    images = [m.image.permute(1, 2, 0).numpy() for m in mistakes]
    targets, predicted = [m.target for m in mistakes], [m.predicted for m in mistakes]
    confidences = [m.confidence for m in mistakes]
    drawings["mistakes"] = lambda: figures.mistakes_figure(images, targets, predicted, confidences, names)
    return drawings
