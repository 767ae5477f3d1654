"""The sweep report: one row per job from its folder, groups over folds/seeds, `summary.{csv,md,png}`.

Everything is read back from the job folders (`.hydra/overrides.yaml`, `metrics.json`,
`status.json`, `history.json`), so the report can be rebuilt at any time, also for a sweep that
is still running or was killed (`python -m lightning_resnet.summarize multirun/<date>/<time>`).
"""

from __future__ import annotations

import csv
import logging
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lightning_resnet.sweeps.status import read_json, read_status

log = logging.getLogger(__name__)

# Overrides that repeat a configuration rather than change it: jobs differing only here form a group.
REPEAT_KEYS = ("seed", "data.fold")
# Overrides that do not change what a job computes.
IGNORED_KEYS = ("resume", "claim_device", "ckpt_path")
# (column, heading, where in metrics.json); figures the studies tabulate.
FIGURES = (
    ("best_train_acc", "best train acc", ("best", "train/acc")),
    ("best_val_acc", "best val acc", ("best", "val/acc")),
    ("test_acc", "test acc", ("test", "test/acc")),
    ("test_f1", "test macro F1", ("test", "test/f1")),
    ("test_loss", "test loss", ("test", "test/loss")),
    ("silhouette", "cluster score", ("report", "silhouette")),
)
GROUP_FIGURES = ("best_val_acc", "test_acc", "test_f1")


@dataclass
class JobRow:
    job: str
    overrides: list[str]
    status: str  # ok | failed | unfinished
    error: str = ""
    score: float | None = None  # the monitored metric's best value
    params: int | None = None
    gmacs: float | None = None  # multiply-accumulates of one forward pass, in billions
    epochs: int | None = None
    wall_time_s: float | None = None
    figures: dict[str, float | None] = field(default_factory=dict)
    curve: list[float] = field(default_factory=list)  # the monitored metric per epoch

    def as_record(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "status": self.status,
            "overrides": " ".join(self.overrides),
            "score": self.score,
            "params": self.params,
            "gmacs": self.gmacs,
            **{name: self.figures.get(name) for name, _, _ in FIGURES},
            "epochs": self.epochs,
            "wall_time_s": self.wall_time_s,
            "error": self.error,
        }


def _dig(data: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Job folders of a sweep: the subfolders with a `.hydra/overrides.yaml`."""
    return sorted(p.parent.parent for p in sweep_dir.glob("*/.hydra/overrides.yaml"))


def read_job(job_dir: Path, monitor: str) -> JobRow:
    saved = job_dir / ".hydra" / "overrides.yaml"  # absent in a run made in code (`train.run(cfg)`)
    overrides = (yaml.safe_load(saved.read_text()) or []) if saved.is_file() else []
    overrides = [o for o in overrides if not o.startswith("hydra.") and o.split("=")[0] not in IGNORED_KEYS]
    status = read_status(job_dir) or {}
    metrics = read_json(job_dir / "metrics.json") or {}
    state = status.get("status") or ("ok" if metrics else "unfinished")
    row = JobRow(job=job_dir.name, overrides=overrides, status=state, error=status.get("error", ""))
    if metrics:
        model = metrics.get("model") or {}
        row.score = metrics.get("best_score")
        row.params, row.gmacs = model.get("params_total"), model.get("gmacs")
        row.epochs, row.wall_time_s = metrics.get("epochs_run"), metrics.get("wall_time_s")
        row.figures = {name: _dig(metrics, keys) for name, _, keys in FIGURES}
    history = read_json(job_dir / "history.json") or []
    row.curve = [epoch[monitor] for epoch in history if monitor in epoch]
    return row


def sweep_monitor(job_dir: Path) -> tuple[str, str]:
    """(`monitor`, `monitor_mode`) of the sweep, from a job's composed config (written when it starts)."""
    config = yaml.safe_load((job_dir / ".hydra" / "config.yaml").read_text()) or {}
    return config["monitor"], config["monitor_mode"]


def sort_rows(rows: list[JobRow], mode: str) -> list[JobRow]:
    """Best monitored score first; jobs without a score (failed, unfinished) last."""
    sign = -1.0 if mode == "max" else 1.0
    return sorted(rows, key=lambda r: (r.score is None, sign * (r.score or 0.0), r.job))


@dataclass
class Group:
    """Jobs that differ only in seed / fold: one configuration, repeated."""

    key: str
    jobs: list[JobRow]

    def values(self, name: str) -> list[float]:
        """A figure of each of the group's finished jobs."""
        return [j.figures[name] for j in self.jobs if j.status == "ok" and j.figures.get(name) is not None]

    def stats(self, name: str) -> tuple[float, float, int] | None:
        """(mean, sample std, n) of a figure over the group's finished jobs."""
        values = self.values(name)
        if not values:
            return None
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values)


def group_rows(rows: list[JobRow]) -> list[Group]:
    groups: dict[str, list[JobRow]] = {}
    for row in rows:
        key = " ".join(o for o in row.overrides if o.split("=")[0] not in REPEAT_KEYS) or "(defaults)"
        groups.setdefault(key, []).append(row)
    return [Group(key, jobs) for key, jobs in groups.items()]


def welch_p(a: Group, b: Group, name: str) -> float | None:
    """Two-sided Welch t-test p-value of figure `name` between two groups (None if n < 2 in either)."""
    from scipy.stats import ttest_ind

    values = [a.values(name), b.values(name)]
    if min(len(v) for v in values) < 2:
        return None
    p = float(ttest_ind(values[0], values[1], equal_var=False).pvalue)
    return None if math.isnan(p) else p


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int) and value >= 10_000:
        return f"{value / 1e6:.2f}M"
    return str(value)


def _markdown_table(headings: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headings) + " |", "|" + "---|" * len(headings)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def format_markdown(rows: list[JobRow], groups: list[Group], monitor: str, mode: str) -> str:
    ok = sum(r.status == "ok" for r in rows)
    lines = [
        f"# Sweep summary: {len(rows)} jobs ({ok} ok, {len(rows) - ok} failed or unfinished)",
        "",
        f"Sorted by `{monitor}` ({mode}) of each job's best checkpoint. GMACs: multiply-accumulates "
        "of one forward pass at the training image size, as torchvision's model tables do.",
        "",
    ]
    if rows[0].score is not None:
        lines += [f"Best: `{rows[0].job}` ({' '.join(rows[0].overrides)}), {monitor} = {rows[0].score:.4f}", ""]
    headings = ["job", "status", "score", "params", "GMACs", *(h for _, h, _ in FIGURES), "epochs", "wall s"]
    table = [
        [
            r.job,
            r.status if r.status != "failed" else f"failed: {r.error}",
            _fmt(r.score),
            _fmt(r.params),
            _fmt(r.gmacs, 3),
            *(_fmt(r.figures.get(name)) for name, _, _ in FIGURES),
            _fmt(r.epochs),
            _fmt(r.wall_time_s, 1),
        ]
        for r in rows
    ]
    lines.append(_markdown_table(headings, table))
    if any(len(g.jobs) > 1 for g in groups):
        lines += ["", format_groups(groups)]
    return "\n".join(lines) + "\n"


def format_groups(groups: list[Group]) -> str:
    """Mean ± std (n) per configuration, and whether it differs from the best one beyond the noise."""
    best = max(groups, key=lambda g: (g.stats("best_val_acc") or (-math.inf,))[0])
    headings = ["configuration", *(f"{name} mean ± std (n)" for name in GROUP_FIGURES), "p vs best (val acc)"]
    table = []
    for group in groups:
        cells = []
        for name in GROUP_FIGURES:
            stats = group.stats(name)
            cells.append(f"{stats[0]:.4f} ± {stats[1]:.4f} ({stats[2]})" if stats else "-")
        p = None if group is best else welch_p(group, best, "best_val_acc")
        verdict = "best" if group is best else ("-" if p is None else f"{p:.3f}" + (" (noise)" if p >= 0.05 else ""))
        table.append([group.key, *cells, verdict])
    return (
        "## Repeated configurations (seeds / folds)\n\n"
        "Jobs that differ only in `seed` or `data.fold`, pooled. p: Welch's t-test against the best "
        "configuration's val acc; p >= 0.05 means the difference is within the run-to-run noise.\n\n"
        + _markdown_table(headings, table)
    )


def plot_summary(rows: list[JobRow], monitor: str, path: Path) -> None:
    """The monitored metric's curve of every job on one chart, and test accuracy per job as bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (curves, bars) = plt.subplots(1, 2, figsize=(13, 4.8))
    for row in rows:
        if row.curve:
            curves.plot(range(len(row.curve)), row.curve, marker="o", markersize=3, label=row.job)
    curves.set(xlabel="epoch", ylabel=monitor, title=f"{monitor} per epoch")
    curves.xaxis.set_major_locator(MaxNLocator(integer=True))
    if any(r.curve for r in rows):
        curves.legend(fontsize=7)
    tested = [r for r in rows if r.figures.get("test_acc") is not None]
    bars.barh([r.job for r in tested], [r.figures["test_acc"] for r in tested], color="tab:blue")
    bars.invert_yaxis()
    bars.set(xlabel="test acc", xlim=(0, 1), title="test accuracy")
    bars.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_summary(sweep_dir: str | Path) -> list[JobRow]:
    """Write `summary.csv`, `summary.md`, `summary.png` (and `summary_groups.csv`) into `sweep_dir`."""
    sweep_dir = Path(sweep_dir)
    dirs = job_dirs(sweep_dir)
    if not dirs:
        raise FileNotFoundError(f"{sweep_dir} holds no sweep jobs (no */.hydra/overrides.yaml)")
    monitor, mode = sweep_monitor(dirs[0])
    rows = sort_rows([read_job(d, monitor) for d in dirs], mode)
    groups = group_rows(rows)
    records = [r.as_record() for r in rows]
    with (sweep_dir / "summary.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    if any(len(g.jobs) > 1 for g in groups):
        with (sweep_dir / "summary_groups.csv").open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["configuration", *(f"{n}_{s}" for n in GROUP_FIGURES for s in ("mean", "std", "n"))])
            for group in groups:
                stats = [group.stats(n) or (None, None, 0) for n in GROUP_FIGURES]
                writer.writerow([group.key, *(v for s in stats for v in s)])
    (sweep_dir / "summary.md").write_text(format_markdown(rows, groups, monitor, mode))
    plot_summary(rows, monitor, sweep_dir / "summary.png")
    failed = [r for r in rows if r.status != "ok"]
    log.info("sweep summary of %d jobs written to %s", len(rows), sweep_dir / "summary.md")
    if failed:
        log.warning("%d jobs failed or unfinished: %s", len(failed), ", ".join(f"{r.job} ({r.status})" for r in failed))
    return rows
