"""`report.html`: a run's or a sweep's results on one self-contained page that opens from disk.

One file, no server, no script, no network: the figures the run already wrote (`curves.png`,
`confusion_matrix.png`, `mistakes.png`, `embedding.png`, `lr_find.png`, the sweep's `summary.png`) are
embedded as base64 data URIs, the style is inline, and every text that comes from a user (class names,
paths, overrides, errors) is HTML-escaped. The sweep page holds the summary table sorted as `summary.md`,
the repeated configurations with mean ± std and p-values (the sweep summary's own `Group.stats` and
`welch_p`), the study's published figures beside ours when the config has a `study:` key
(`reporting.study`), and a section per job; a run page holds that job section (and its study table).

Everything is read back from the folder, so `python -m lightning_resnet.report <folder>` rebuilds it.
"""

from __future__ import annotations

import base64
import collections
import csv
import html
import logging
import math
import shlex
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from lightning_resnet.reporting.study import Comparison, Study, compare, read_study
from lightning_resnet.sweeps.status import read_json
from lightning_resnet.sweeps.summary import (
    FIGURES,
    GROUP_FIGURES,
    Group,
    JobRow,
    group_rows,
    job_dirs,
    read_job,
    sort_rows,
    welch_p,
)

log = logging.getLogger(__name__)

PAGE = "report.html"
COMMAND = "python -m lightning_resnet"
# A job's figures, in page order: (file, caption).
JOB_FIGURES = (
    ("curves.png", "learning curves (best epoch marked)"),
    ("confusion_matrix.png", "confusion matrix (test)"),
    ("mistakes.png", "most confident mistakes (test)"),
    ("embedding.png", "penultimate features of the test set"),
    ("lr_find.png", "learning-rate range test"),
)
MOST_CONFUSED = 10  # class pairs listed per job
FIGURES_FOR_BEST = 20  # a sweep page embeds the figures of its best 20 jobs (a 100-trial search stays a few MB)
STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; max-width: 1200px;
       padding: 16px 24px 48px; color: #1d1d1f; }
h1 { font-size: 22px; margin: 8px 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; }
h3 { font-size: 15px; margin: 18px 0 6px; }
.meta, .note { color: #555; } .note { font-size: 12px; }
code, pre { font: 12px/1.4 ui-monospace, SFMono-Regular, Menlo, monospace; background: #f4f4f6; border-radius: 3px; }
code { padding: 1px 4px; } pre { padding: 8px 10px; white-space: pre-wrap; word-break: break-all; }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; vertical-align: top; }
th { background: #f4f4f6; } td.text, th.text { text-align: left; }
tr.best td { background: #eef7ee; } tr.failed td { background: #fbeeee; }
.figures { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; max-width: 100%; }
figure img { max-width: 100%; max-height: 560px; height: auto; border: 1px solid #eee; }
figcaption { font-size: 12px; color: #555; }
nav a { margin-right: 10px; white-space: nowrap; }
"""


# -- entry points ----------------------------------------------------------------------------------
def write_report_page(folder: str | Path) -> Path:
    """Write `<folder>/report.html` for a sweep folder (job subfolders) or a run folder; returns its path."""
    folder = Path(folder)
    if job_dirs(folder):
        text = sweep_page(folder)
    elif (folder / "metrics.json").is_file() or (folder / ".hydra" / "config.yaml").is_file():
        text = run_page(folder)
    else:
        raise FileNotFoundError(f"{folder} is neither a run folder (metrics.json) nor a sweep folder (job folders)")
    path = folder / PAGE
    path.write_text(text, encoding="utf-8")
    log.info("report page written to %s", path)
    return path


def write_report_page_or_log(folder: str | Path) -> Path | None:
    """`write_report_page`, for the end of a run or sweep: a failure is logged, never raised."""
    try:
        return write_report_page(folder)
    except Exception as err:  # the page is a view of results already on disk: never fail a run for it
        log.warning(
            "%s not written in %s: %s: %s", PAGE, folder, type(err).__name__, err, exc_info=log.isEnabledFor(10)
        )
        return None


def run_page(run_dir: Path) -> str:
    """The page of one run: its study table (if any) and its job section."""
    monitor, mode = _monitor(run_dir)
    row = read_job(run_dir, monitor)
    study = read_study(run_dir)
    parts = [_header(f"Run {run_dir.name}", run_dir, None, monitor, mode)]  # the command: in the job section
    if study is not None:
        parts.append(_study_section(study, compare(study, [run_dir], [row])))
    parts.append(_job_section(run_dir, row, index=0, level=2, own_page_link=False))
    return _document(f"{run_dir.name}: run report", parts)


def sweep_page(sweep_dir: Path) -> str:
    """The page of a sweep: study table, sorted summary, repeated configurations, curves, one section per job."""
    dirs = job_dirs(sweep_dir)
    monitor, mode = _monitor(dirs[0])
    rows = sort_rows([read_job(d, monitor) for d in dirs], mode)
    by_name = {d.name: d for d in dirs}
    study = next((s for s in (read_study(d) for d in dirs) if s is not None), None)
    ok = sum(r.status == "ok" for r in rows)
    parts = [
        _header(
            f"Sweep {sweep_dir.name}: {len(rows)} jobs ({ok} ok, {len(rows) - ok} failed or unfinished)",
            sweep_dir,
            _sweep_command(sweep_dir),
            monitor,
            mode,
        )
    ]
    if study is not None:
        parts.append(_study_section(study, compare(study, dirs, rows)))
    parts.append(_summary_section(rows, monitor, mode))
    groups = group_rows(rows)
    if any(len(g.jobs) > 1 for g in groups):
        parts.append(_groups_section(groups))
    parts.append(_image_block(sweep_dir / "summary.png", f"{monitor} per epoch of every job; test accuracy per job"))
    parts.append("<h2>Jobs</h2>")
    parts += [
        _job_section(by_name[r.job], r, index, level=3, own_page_link=True, figures=index < FIGURES_FOR_BEST)
        for index, r in enumerate(rows)
    ]
    return _document(f"{sweep_dir.name}: sweep report", parts)


# -- sections --------------------------------------------------------------------------------------
def _header(title: str, folder: Path, command: str | None, monitor: str, mode: str) -> str:
    return (
        f"<h1>{_e(title)}</h1>"
        f'<p class="meta">Folder <code>{_e(folder.resolve())}</code>; best epoch and ranking by '
        f"<code>{_e(monitor)}</code> ({_e(mode)}); page written {_e(time.strftime('%Y-%m-%d %H:%M:%S'))}.</p>"
        + (f"<h3>Command</h3><pre>{_e(command)}</pre>" if command else "")
    )


def _study_section(study: Study, comparisons: list[Comparison]) -> str:
    """Published figures beside ours, row by row: published, ours (mean ± std, n), difference."""
    head = ["configuration", "our jobs"]
    for column in study.columns:
        head += [f"{column.label}: published", "ours (mean ± std, n)", "Δ"] if column.ours else [column.label]
    head.append("note")
    body = []
    for comparison in comparisons:
        cells = [_td(comparison.label, text=True)]
        if not comparison.reproduced_here:
            cells.append(_td("no config here", text=True))
        else:
            cells.append(_td(", ".join(comparison.jobs) or "none run", text=True))
        for column in study.columns:
            published = comparison.published.get(column.key)
            cells.append(_td("-" if published is None else published))  # as the study wrote it
            if column.ours is None:
                continue
            stats = comparison.ours.get(column.key)
            cells.append(_td(f"{stats[0]:.4f} ± {stats[1]:.4f} ({stats[2]})" if stats else "-"))
            cells.append(_delta_cell(stats[0] - published if stats and _is_number(published) else None))
        cells.append(_td(comparison.note, text=True))
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f"<h2>Did we reproduce it? {_e(study.title)}</h2>"
        f'<p class="meta">Published figures: {_e(study.source)}. Ours: mean ± sample std over the finished jobs '
        "each row selects (seeds, folds; n = 1: one job, no spread). Δ = our mean - published.</p>"
        + _table(head, body, text_columns={0, 1, len(head) - 1})
    )


def _summary_section(rows: Sequence[JobRow], monitor: str, mode: str) -> str:
    """The table of `summary.md`/`summary.csv`: one row per job, best `monitor` first."""
    head = ["job", "status", "score", "params", "GMACs", *(h for _, h, _ in FIGURES), "epochs", "wall s"]
    body = []
    for index, row in enumerate(rows):
        status = row.status if row.status != "failed" else f"failed: {row.error}"
        css = "best" if index == 0 and row.score is not None else ("failed" if row.status != "ok" else "")
        cells = [
            f'<td class="text"><a href="#job-{index}">{_e(row.job)}</a></td>',
            _td(status, text=True),
            _td(_number(row.score)),
            _td(_count(row.params)),
            _td(_number(row.gmacs, 3)),
            *(_td(_number(row.figures.get(name))) for name, _, _ in FIGURES),
            _td(_number(row.epochs)),
            _td(_number(row.wall_time_s, 1)),
        ]
        body.append(f'<tr class="{css}">' + "".join(cells) + "</tr>")
    return (
        f'<h2>Summary</h2><p class="meta">Sorted by <code>{_e(monitor)}</code> ({_e(mode)}) of each job\'s best '
        "checkpoint, as summary.md. GMACs: multiply-accumulates of one forward pass at the training image size.</p>"
        + _table(head, body, text_columns={0, 1}, table_id="summary")
    )


def _groups_section(groups: Sequence[Group]) -> str:
    """Repeated configurations (jobs differing only in seed / fold): mean ± std (n), p against the best,
    as summary.md's `format_groups`, from the same `Group.stats` and `welch_p`."""
    best = max(groups, key=lambda g: (g.stats("best_val_acc") or (-math.inf,))[0])
    headings = {name: heading for name, heading, _ in FIGURES}
    head = ["configuration", *(f"{headings[n]} mean ± std (n)" for n in GROUP_FIGURES), "p vs best (val acc)"]
    body = []
    for group in groups:
        cells = [_td(group.key, text=True)]
        for name in GROUP_FIGURES:
            stats = group.stats(name)
            cells.append(_td(f"{stats[0]:.4f} ± {stats[1]:.4f} ({stats[2]})" if stats else "-"))
        p = None if group is best else welch_p(group, best, "best_val_acc")
        verdict = "best" if group is best else ("-" if p is None else f"{p:.3f}" + (" (noise)" if p >= 0.05 else ""))
        cells.append(_td(verdict))
        body.append(f'<tr class="{"best" if group is best else ""}">' + "".join(cells) + "</tr>")
    return (
        "<h2>Repeated configurations (seeds / folds)</h2>"
        '<p class="meta">Jobs that differ only in <code>seed</code> or <code>data.fold</code>, pooled. p: Welch\'s '
        "t-test against the best configuration's val acc; p ≥ 0.05 means the difference is within the run-to-run "
        "noise.</p>" + _table(head, body, text_columns={0}, table_id="groups")
    )


def _job_section(job_dir: Path, row: JobRow, index: int, level: int, own_page_link: bool, figures: bool = True) -> str:
    """A job: command and overrides, figures, the report's images (unless `figures` is false) and tables."""
    h = f"h{level}"
    overrides = _raw_overrides(job_dir)
    parts = [f'<section id="job-{index}"><{h}>{_e(row.job)} <small>({_e(row.status)})</small></{h}>']
    if own_page_link and (job_dir / PAGE).is_file():
        href = urllib.parse.quote(job_dir.name) + "/" + PAGE
        parts.append(f'<p class="note"><a href="{_e(href)}">this job\'s own page</a></p>')
    parts.append(f"<pre>{_e(f'{COMMAND} {_join(overrides)}'.strip())}</pre>")
    if overrides:
        parts.append(
            '<p class="note">Overrides (.hydra/overrides.yaml): '
            + " ".join(f"<code>{_e(o)}</code>" for o in overrides)
            + "</p>"
        )
    if row.status == "failed":
        parts.append(f"<p><strong>failed:</strong> {_e(row.error)}</p>")
    parts.append(_job_figures_table(row))
    images = [_image_block(job_dir / name, caption) for name, caption in JOB_FIGURES if (job_dir / name).is_file()]
    if images and not figures:
        parts.append(
            f"<p class=\"note\">Figures: in this job's own page (only the best {FIGURES_FOR_BEST} jobs' here).</p>"
        )
    elif images:
        parts.append('<div class="figures">' + "".join(images) + "</div>")
    elif row.status == "ok":
        parts.append('<p class="note">No report figures in this folder (callbacks.reports off, or no test).</p>')
    parts.append(_classification_report_table(job_dir / "classification_report.csv"))
    parts.append(_most_confused_table(job_dir / "predictions.csv"))
    parts.append("</section>")
    return "".join(parts)


def _job_figures_table(row: JobRow) -> str:
    head = ["score", *(h for _, h, _ in FIGURES), "epochs", "wall s", "params", "GMACs"]
    cells = [
        _td(_number(row.score)),
        *(_td(_number(row.figures.get(name))) for name, _, _ in FIGURES),
        _td(_number(row.epochs)),
        _td(_number(row.wall_time_s, 1)),
        _td(_count(row.params)),
        _td(_number(row.gmacs, 3)),
    ]
    return _table(head, ["<tr>" + "".join(cells) + "</tr>"])


def _classification_report_table(path: Path) -> str:
    """classification_report.csv as written (scikit-learn's per-class report)."""
    if not path.is_file():
        return ""
    with path.open(newline="") as file:
        records = list(csv.DictReader(file))
    if not records:
        return ""
    columns = [c for c in records[0] if c != "class"]
    body = [
        "<tr>" + _td(r["class"], text=True) + "".join(_td(_csv_number(r[c], c)) for c in columns) + "</tr>"
        for r in records
    ]
    return "<h4>Classification report (test)</h4>" + _table(["class", *columns], body, text_columns={0})


def _most_confused_table(path: Path) -> str:
    """The most frequent (true, predicted) pairs among the test mistakes, from predictions.csv."""
    if not path.is_file():
        return ""
    with path.open(newline="") as file:
        records = list(csv.DictReader(file))
    support = collections.Counter(r["target"] for r in records)
    pairs = collections.Counter((r["target"], r["predicted"]) for r in records if r["target"] != r["predicted"])
    if not pairs:
        return '<h4>Most-confused class pairs</h4><p class="note">No mistakes on the test set.</p>'
    body = [
        "<tr>"
        + _td(true, text=True)
        + _td(predicted, text=True)
        + _td(str(count))
        + _td(f"{count / support[true]:.1%}")
        + "</tr>"
        for (true, predicted), count in pairs.most_common(MOST_CONFUSED)
    ]
    head = ["true class", "predicted as", "images", "share of the true class"]
    return (
        f"<h4>Most-confused class pairs ({sum(pairs.values())} mistakes of {len(records)} test images)</h4>"
        + _table(head, body, text_columns={0, 1})
    )


def _image_block(path: Path, caption: str) -> str:
    if not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    alt = f"{path.parent.name}/{path.name}"
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_e(alt)}">'
        f"<figcaption>{_e(path.name)}: {_e(caption)}</figcaption></figure>"
    )


# -- reading the folder ----------------------------------------------------------------------------
def _monitor(job_dir: Path) -> tuple[str, str]:
    """(`monitor`, `monitor_mode`) from the saved config, else from metrics.json (a run without `.hydra/`)."""
    config_path = job_dir / ".hydra" / "config.yaml"
    config = (yaml.safe_load(config_path.read_text()) or {}) if config_path.is_file() else {}
    metrics = read_json(job_dir / "metrics.json") or {}
    return str(config.get("monitor") or metrics.get("monitor") or "val/acc"), str(
        config.get("monitor_mode") or metrics.get("mode") or "max"
    )


def _raw_overrides(job_dir: Path) -> list[str]:
    """The job's command-line overrides exactly as Hydra saved them (`.hydra/overrides.yaml`)."""
    path = job_dir / ".hydra" / "overrides.yaml"
    return [str(o) for o in (yaml.safe_load(path.read_text()) or [])] if path.is_file() else []


def _sweep_command(sweep_dir: Path) -> str:
    """The sweep's command line from `multirun.yaml` (its task overrides, sweeps included: `model=a,b`)."""
    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        return f"{COMMAND} -m ... (no multirun.yaml in the folder)"
    hydra = (yaml.safe_load(path.read_text()) or {}).get("hydra") or {}
    task = (hydra.get("overrides") or {}).get("task") or []
    return f"{COMMAND} -m {_join(str(o) for o in task)}".strip()


# -- HTML helpers ----------------------------------------------------------------------------------
def _document(title: str, parts: Iterable[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'  # no favicon request
        f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>\n"
        + "\n".join(p for p in parts if p)
        + "\n</body></html>\n"
    )


def _table(head: Sequence[str], body: Sequence[str], text_columns: Iterable[int] = (), table_id: str = "") -> str:
    left = set(text_columns)
    heads = "".join(f'<th class="{"text" if i in left else ""}">{_e(h)}</th>' for i, h in enumerate(head))
    ident = f' id="{_e(table_id)}"' if table_id else ""
    return f"<table{ident}><thead><tr>{heads}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _td(value: Any, text: bool = False) -> str:
    return f'<td class="text">{_e(value)}</td>' if text else f"<td>{_e(value)}</td>"


def _delta_cell(delta: float | None) -> str:
    """Signed and uncoloured: whether higher is better depends on the figure (accuracy, loss)."""
    return _td("-" if delta is None else f"{delta:+.4f}")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _count(value: int | None) -> str:
    return "-" if value is None else (f"{value / 1e6:.2f}M" if value >= 10_000 else str(value))


def _csv_number(text: str, column: str) -> str:
    try:
        return str(int(float(text))) if column == "support" else f"{float(text):.4f}"
    except ValueError:
        return text


def _join(words: Iterable[str]) -> str:
    return shlex.join(list(words))
