"""The report's figures, drawn with matplotlib's Agg backend (no display needed).

Each `*_figure` function returns a `Figure`; `save_figures` draws a set of them into PNG files, and
`FigureProcess` does that in a forked child while this process goes on (the end of a run has two
cores and one Python thread: matplotlib holds the GIL while it draws, so a thread would not overlap).
"""

from __future__ import annotations

import functools
import logging
import math
import multiprocessing
import re
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib import font_manager
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lightning_resnet.reporting.history import best_epoch

log = logging.getLogger(__name__)

# Families with Korean, Chinese and Japanese glyphs, the first installed one used: Debian's fonts-noto-cjk
# (its .ttc files list as "Noto Sans CJK JP" in matplotlib), Nanum, Adobe's Source Han, macOS's, Windows'.
CJK_FAMILIES = (
    "Noto Sans CJK JP",
    "Noto Sans CJK KR",
    "Noto Sans KR",
    "NanumGothic",
    "Source Han Sans KR",
    "Source Han Sans",
    "Apple SD Gothic Neo",
    "Malgun Gothic",
)
# Hangul jamo (names from macOS file systems come decomposed), CJK, kana, Hangul syllables, full-width forms.
CJK_CHARACTERS = re.compile("[\u1100-\u11ff\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")


@functools.cache
def cjk_font() -> str | None:
    """The family name of an installed CJK font, or None (logged once, with the command that installs one).

    Fonts installed after matplotlib cached its font list (`apt-get install fonts-noto-cjk` on a machine
    that had drawn before) are added to the list first.
    """
    manager = font_manager.fontManager

    def installed() -> str | None:
        names = {font.name for font in manager.ttflist}
        return next((family for family in CJK_FAMILIES if family in names), None)

    if installed() is None:
        known = {font.fname for font in manager.ttflist}
        for path in font_manager.findSystemFonts():
            if path not in known:
                try:
                    manager.addfont(path)
                except (OSError, RuntimeError, ValueError):  # a font file FreeType cannot read
                    continue
    found = installed()
    if found is None:
        log.warning(
            "class names in CJK script are drawn as boxes: no CJK font is installed (looked for %s); "
            "install one, e.g. apt-get install fonts-noto-cjk",
            ", ".join(CJK_FAMILIES),
        )
    return found


def use_fonts_for(names: Sequence[str]) -> None:
    """Before a figure shows `names`: an installed CJK font as the fallback family when they need one
    (matplotlib's DejaVu Sans has no Korean); Latin text keeps the default font."""
    if not any(CJK_CHARACTERS.search(str(name)) for name in names):
        return
    family = cjk_font()
    families = list(plt.rcParams["font.family"])
    if family is not None and family not in families:
        plt.rcParams["font.family"] = [*families, family]


def _cell_fontsize(num_classes: int) -> float:
    return max(4.0, 11.0 - 0.25 * num_classes)


def confusion_matrix_figure(counts: np.ndarray, class_names: Sequence[str]) -> Figure:
    """Counts and row-normalised (recall per true class) side by side, class names on both axes.

    Both panels are scikit-learn's `ConfusionMatrixDisplay`, the plot researchers know; cell text is
    left out above 30 classes, where it would not fit.
    """
    from sklearn.metrics import ConfusionMatrixDisplay

    use_fonts_for(class_names)
    counts = np.asarray(counts)
    totals = counts.sum(axis=1, keepdims=True)
    normalized = np.divide(counts, totals, out=np.zeros_like(counts, dtype=float), where=totals > 0)
    n = len(class_names)
    side = min(max(4.0, 0.45 * n + 2.0), 14.0)
    fig, axes = plt.subplots(1, 2, figsize=(2 * side + 1.5, side), constrained_layout=True)
    slanted = max(len(name) for name in class_names) > 3
    for ax, values, title, fmt in (
        (axes[0], counts, "counts", "d"),
        (axes[1], normalized, "normalised by true class", ".2f"),
    ):
        ConfusionMatrixDisplay(values, display_labels=list(class_names)).plot(
            ax=ax,
            cmap="Blues",
            values_format=fmt,
            colorbar=True,
            include_values=n <= 30,
            xticks_rotation=45 if slanted else "horizontal",
            im_kw={"vmin": 0},
            text_kw={"fontsize": _cell_fontsize(n)},
        )
        ax.set(title=title, xlabel="predicted", ylabel="true")
        plt.setp(ax.get_xticklabels(), ha="right" if slanted else "center")
    return fig


def curves_figure(history: Sequence[dict[str, Any]], monitor: str, mode: str) -> Figure:
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


def embedding_figure(points: np.ndarray, labels: np.ndarray, class_names: Sequence[str], title: str) -> Figure:
    """2-D points coloured by true class, with a legend of class names."""
    use_fonts_for(class_names)
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
    use_fonts_for(class_names)
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


DPI = 110
Drawing = Callable[[], Figure]  # draws one figure from data it holds (numpy arrays, lists; no torch)


def save_figures(drawings: Mapping[str, Drawing], out_dir: Path) -> dict[str, Path]:
    """Draw each figure and save it as `<out_dir>/<name>.png`; {name: PNG file}."""
    pngs = {}
    for name, draw in drawings.items():
        fig = draw()
        pngs[name] = Path(out_dir) / f"{name}.png"
        fig.savefig(pngs[name], dpi=DPI)
        plt.close(fig)
    return pngs


class FigureProcess:
    """`save_figures(drawings, out_dir)` in a forked child, started at once; `join` waits for it and draws in
    this process whatever the child did not save (it failed, or forking is not available).

    Forked rather than spawned: the child starts in milliseconds with matplotlib already imported, and the
    drawings run only numpy and matplotlib, nothing that threads of this process (torch's, TensorBoard's
    writers) hold a lock in. Linux only (macOS system libraries are not fork-safe); elsewhere, or with
    `enabled=False`, `join` draws everything here.
    """

    def __init__(self, drawings: Mapping[str, Drawing], out_dir: Path, enabled: bool = True) -> None:
        self.drawings, self.out_dir = dict(drawings), Path(out_dir)
        self.process: multiprocessing.process.BaseProcess | None = None
        if not (enabled and self.drawings and sys.platform == "linux"):
            return
        for name in self.drawings:  # so that `join` sees what the child saved, not an earlier run's file
            (self.out_dir / f"{name}.png").unlink(missing_ok=True)
        context = multiprocessing.get_context("fork")
        self.process = context.Process(target=save_figures, args=(self.drawings, self.out_dir), daemon=True)
        with warnings.catch_warnings():  # Python >= 3.12 warns about forking any process that has threads
            warnings.simplefilter("ignore", DeprecationWarning)
            self.process.start()

    def join(self) -> dict[str, Path]:
        """{name: PNG file} of every drawing, once each is saved."""
        pngs = {name: self.out_dir / f"{name}.png" for name in self.drawings}
        missing = dict(self.drawings)
        if self.process is not None:
            self.process.join()
            if self.process.exitcode == 0:  # every file it saved is complete
                missing = {name: draw for name, draw in self.drawings.items() if not pngs[name].is_file()}
            if missing:
                log.warning(
                    "the figure process exited with %s; drawing %s here", self.process.exitcode, ", ".join(missing)
                )
            self.process.close()
            self.process = None
        save_figures(missing, self.out_dir)
        return pngs
