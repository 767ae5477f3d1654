"""The report's figures, drawn with matplotlib's Agg backend (no display needed).

Each function returns a `Figure`; the caller saves it and/or logs it to TensorBoard, then closes it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def _cell_fontsize(num_classes: int) -> float:
    return max(4.0, 11.0 - 0.25 * num_classes)


def confusion_matrix_figure(counts: np.ndarray, class_names: Sequence[str]) -> Figure:
    """Counts and row-normalised (recall per true class) side by side, class names on both axes."""
    counts = np.asarray(counts)
    totals = counts.sum(axis=1, keepdims=True)
    normalized = np.divide(counts, totals, out=np.zeros_like(counts, dtype=float), where=totals > 0)
    n = len(class_names)
    side = min(max(4.0, 0.45 * n + 2.0), 14.0)
    fig, axes = plt.subplots(1, 2, figsize=(2 * side + 1.5, side), constrained_layout=True)
    annotate = n <= 30
    for ax, values, title, fmt in (
        (axes[0], counts, "counts", "d"),
        (axes[1], normalized, "normalised by true class", ".2f"),
    ):
        image = ax.imshow(values, cmap="Blues", vmin=0)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        ax.set(title=title, xlabel="predicted", ylabel="true", xticks=range(n), yticks=range(n))
        slanted = max(len(name) for name in class_names) > 3
        ax.set_xticklabels(class_names, rotation=45 if slanted else 0, ha="right" if slanted else "center")
        ax.set_yticklabels(class_names)
        if annotate:
            threshold = values.max() / 2 if values.max() > 0 else 0.5
            for i in range(n):
                for j in range(n):
                    ax.text(
                        j,
                        i,
                        format(values[i, j], fmt),
                        ha="center",
                        va="center",
                        fontsize=_cell_fontsize(n),
                        color="white" if values[i, j] > threshold else "black",
                    )
    return fig


def curves_figure(history: Sequence[dict[str, Any]], monitor: str = "val/acc", mode: str = "max") -> Figure:
    """Train and val loss and accuracy per epoch; the best epoch by `monitor` is marked on both panels."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    best = best_epoch(history, monitor, mode)
    for ax, metric in zip(axes, ("loss", "acc"), strict=True):
        for stage, style in (("train", "-o"), ("val", "-s")):
            points = [(row["epoch"], row[f"{stage}/{metric}"]) for row in history if f"{stage}/{metric}" in row]
            if points:
                epochs, values = zip(*points, strict=True)
                ax.plot(epochs, values, style, markersize=3, label=f"{stage}/{metric}")
        if best is not None:
            ax.axvline(best, color="tab:red", linestyle="--", linewidth=1, label=f"best epoch {best} ({monitor})")
        ax.set(title=metric, xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def best_epoch(history: Sequence[dict[str, Any]], monitor: str, mode: str = "max") -> int | None:
    """The epoch with the best `monitor` value (the first, on ties); None when it was never logged."""
    rows = [row for row in history if monitor in row]
    if not rows:
        return None
    pick = max if mode == "max" else min
    return int(pick(rows, key=lambda row: row[monitor])["epoch"])


def embedding_figure(points: np.ndarray, labels: np.ndarray, class_names: Sequence[str], title: str) -> Figure:
    """2-D points coloured by true class, with a legend of class names."""
    fig, ax = plt.subplots(figsize=(7, 6), constrained_layout=True)
    cmap = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    for index, name in enumerate(class_names):
        mask = labels == index
        if mask.any():
            ax.scatter(*points[mask].T, s=10, alpha=0.75, color=cmap(index % cmap.N), label=name)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    if len(class_names) <= 20:
        ax.legend(fontsize=8, markerscale=1.5, loc="best", ncol=1 + len(class_names) // 11)
    return fig


def mistakes_figure(
    images: Sequence[np.ndarray],
    true_labels: Sequence[int],
    pred_labels: Sequence[int],
    confidences: Sequence[float],
    class_names: Sequence[str],
) -> Figure:
    """A grid of (H, W, 3) uint8 images titled `true -> predicted (confidence)`."""
    count = max(1, len(images))
    cols = min(8, count)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.1 * rows), squeeze=False, constrained_layout=True)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, true, pred, conf in zip(axes.flat, images, true_labels, pred_labels, confidences, strict=False):
        ax.imshow(image)
        ax.set_title(f"{class_names[true]} → {class_names[pred]}\n({conf:.2f})", fontsize=8, color="tab:red")
    if not images:
        axes.flat[0].text(0.5, 0.5, "no mistakes", ha="center", va="center")
    fig.suptitle("most confident mistakes: true → predicted (confidence)", fontsize=10)
    return fig
