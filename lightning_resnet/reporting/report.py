"""Turn a test pass (a `OutputCollector`) into the report files of a run directory.

Files: `classification_report.{csv,md}`, `predictions.csv`, `confusion_matrix.png`, `curves.png`
(when there is a history), `embedding.png`, `mistakes.png`. Returns a JSON-ready summary (for
`metrics.json`) and the figures, still open, for TensorBoard.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

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


@dataclass
class Report:
    summary: dict[str, Any]
    figures: dict[str, Path] = field(default_factory=dict)  # name -> PNG file


def write_predictions_csv(path: Path, probs: torch.Tensor, targets: torch.Tensor, class_names: Sequence[str]) -> None:
    """One row per test sample, in test order: true and predicted class, confidence."""
    confidence, predicted = probs.max(dim=1)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "target", "predicted", "confidence"])
        for i, (t, p, c) in enumerate(zip(targets.tolist(), predicted.tolist(), confidence.tolist(), strict=True)):
            writer.writerow([i, class_names[t], class_names[p], f"{c:.6f}"])


def write_report(
    collector: OutputCollector,
    class_names: Sequence[str],
    out_dir: Path,
    history: Sequence[dict[str, Any]] | None,
    monitor: str,
    monitor_mode: str,
    embedding: str = "pca",
    max_points: int = 5000,
    seed: int = 0,
) -> Report:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    logits, targets, features, _ = collector.stacked()
    if not len(targets):
        log.warning("no test samples were seen: no report written")
        return Report({"samples": 0})
    probs = logits.softmax(dim=1)
    predicted = probs.argmax(dim=1)

    report = classification_report(predicted, targets, class_names)
    write_report_csv(report, out_dir / "classification_report.csv")
    write_report_markdown(report, out_dir / "classification_report.md")
    write_predictions_csv(out_dir / "predictions.csv", probs, targets, class_names)

    figs: dict[str, Figure] = {
        "confusion_matrix": figures.confusion_matrix_figure(
            confusion_matrix(predicted, targets, len(class_names)).numpy(), class_names
        )
    }
    if history:
        figs["curves"] = figures.curves_figure(history, monitor, monitor_mode)
    else:
        log.info("no per-epoch history (a run without MetricHistory): curves.png skipped")

    chosen = subsample(len(targets), max_points, seed)
    feats, labels = features[chosen].numpy(), targets[chosen].numpy()
    score = silhouette(feats, labels, max_points, seed)
    points = project_2d(feats, embedding, seed)
    score_text = f"{score:.3f}" if score is not None else "n/a"
    title = f"penultimate features ({embedding.upper()}, {len(chosen)} test images), silhouette {score_text}"
    figs["embedding"] = figures.embedding_figure(points, labels, class_names, title)

    mistakes = collector.mistakes
    figs["mistakes"] = figures.mistakes_figure(
        [m.image.permute(1, 2, 0).numpy() for m in mistakes],
        [m.target for m in mistakes],
        [m.predicted for m in mistakes],
        [m.confidence for m in mistakes],
        class_names,
    )
    pngs = {}
    for name, fig in figs.items():
        pngs[name] = out_dir / f"{name}.png"
        fig.savefig(pngs[name], dpi=110)
        plt.close(fig)

    summary = {
        "samples": len(targets),
        "accuracy": report["accuracy"]["f1"],
        "macro_f1": report["macro avg"]["f1"],
        "weighted_f1": report["weighted avg"]["f1"],
        "silhouette": score,
        "embedding": embedding,
        "mistakes": int((predicted != targets).sum()),
        "files": sorted([*(f"{name}.png" for name in figs), "classification_report.csv", "classification_report.md"]),
    }
    log.info("report written to %s (silhouette of test features: %s)", out_dir, score_text)
    return Report(summary, pngs)
