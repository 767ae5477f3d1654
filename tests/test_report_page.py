"""report.html: one self-contained page per run and per sweep, and the studies' published figures beside ours."""

from __future__ import annotations

import base64
import csv
import logging
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf
from PIL import Image

from lightning_resnet.builders import check_numbers
from lightning_resnet.reporting.html_report import PAGE, write_report_page, write_report_page_or_log
from lightning_resnet.reporting.study import compare, parse_study, read_study
from lightning_resnet.reporting.tensorboard import run_hparams
from lightning_resnet.sweeps.summary import job_dirs, read_job, write_summary
from lightning_resnet.tasks.report import main as report_main
from tests.conftest import compose_config
from tests.miniature import write_job_folder

EXPERIMENTS = ("catsdogs_plain_vs_residual", "flatfoot_depth", "mask_optimizers", "surveillance_focal", "yoga_finetune")
HOSTILE = "<script>alert(1)</script>"  # a class name, as a folder name could be


class Page(HTMLParser):
    """What a reader of the page gets: tables (by id) as rows of cell texts, image sources, links, tags."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.all_tables: list[list[list[str]]] = []
        self.images: list[str] = []
        self.urls: list[str] = []
        self.tags: set[str] = set()
        self.text = ""
        self._table: list[list[str]] | None = None
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        values = dict(attrs)
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]
        if tag == "img":
            self.images.append(values.get("src") or "")
        elif tag == "table":
            self._table = []
            self.all_tables.append(self._table)
            if values.get("id"):
                self.tables[values["id"]] = self._table
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table:
            self._table[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        self.text += data
        if self._cell is not None:
            self._cell.append(data)

    def body_rows(self, table_id: str) -> list[list[str]]:
        return self.tables[table_id][1:]  # after the heading row


def write_png(path: Path, width: int, height: int, shade: int) -> None:
    Image.fromarray(np.full((height, width, 3), shade, dtype=np.uint8)).save(path)


def fake_job(
    sweep: Path,
    name: str,
    overrides: list[str],
    val: float,
    classes: tuple[str, ...] = ("cat", "dog"),
    config: dict | None = None,
    choices: dict | None = None,
    status: str = "ok",
) -> Path:
    """A finished job folder as a sweep job leaves it: config, metrics, history, report files and figures."""
    job = write_job_folder(sweep, name, overrides, val, status, config, error="ValueError: bad lr <x>")
    (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": choices or {}}}}))
    if status != "ok":
        return job
    for index, figure in enumerate(("curves", "confusion_matrix", "mistakes", "embedding")):
        write_png(job / f"{figure}.png", 40 + index, 30, 50 * index)
    with (job / "classification_report.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["class", "precision", "recall", "f1", "support"])
        for c in classes:
            writer.writerow([c, 0.8, 0.75, val, 4])
        writer.writerow(["accuracy", val, val, val, 4 * len(classes)])
    # 4 images per class; the second class mistaken for the first twice, the first for the second once
    rows = [(classes[0], classes[0])] * 3 + [(classes[0], classes[1])] + [(classes[1], classes[0])] * 2
    rows += [(classes[1], classes[1])] * 2 + [(c, c) for c in classes[2:] for _ in range(4)]
    with (job / "predictions.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["index", "target", "predicted", "confidence"])
        writer.writerows([i, t, p, 0.9] for i, (t, p) in enumerate(rows))
    return job


def fake_sweep(sweep: Path) -> None:
    for seed, (a, b) in enumerate([(0.90, 0.80), (0.92, 0.60), (0.88, 0.95)]):
        fake_job(sweep, f"model=a,seed={seed}", ["model=a", f"seed={seed}", "note=<b>x</b>"], a, (HOSTILE, "dog"))
        fake_job(sweep, f"model=b,seed={seed}", ["model=b", f"seed={seed}"], b, ("cat", "dog"))
    fake_job(sweep, "model=c", ["model=c"], 0.0, status="failed")
    (sweep / "multirun.yaml").write_text(
        yaml.safe_dump({"hydra": {"overrides": {"task": ["model=a,b", "seed=0,1,2", "note=<b>x</b>"]}}})
    )


def test_sweep_page_has_the_summary_table_groups_figures_and_every_job(tmp_path):
    fake_sweep(tmp_path)
    write_summary(tmp_path)
    text = write_report_page(tmp_path).read_text()
    page = Page(text)

    with (tmp_path / "summary.csv").open() as file:
        summary = list(csv.DictReader(file))
    table = page.body_rows("summary")
    assert [row[0] for row in table] == [row["job"] for row in summary]  # one row per job, summary.csv's order
    assert [row[2] for row in table[:3]] == ["0.9500", "0.9200", "0.9000"]  # best score first
    assert table[-1][1] == "failed: ValueError: bad lr <x>"

    with (tmp_path / "summary_groups.csv").open() as file:
        groups = {row["configuration"]: row for row in csv.DictReader(file)}
    shown = {row[0]: row for row in page.body_rows("groups")}
    assert shown["model=c"][1] == "-"  # failed: nothing to pool
    for key, stats in groups.items():  # the numbers of summary_groups.csv, formatted
        if key != "model=c":
            mean, std, n = (float(stats[f"best_val_acc_{s}"]) for s in ("mean", "std", "n"))
            assert shown[key][1] == f"{mean:.4f} ± {std:.4f} ({n:.0f})"
    p_in_markdown = re.search(r"\| model=b[^\n]*\| ([\d.]+ \(noise\)) \|", (tmp_path / "summary.md").read_text())
    assert shown["model=b"][-1] == p_in_markdown.group(1)  # Welch's p as summary.md gives it

    # self-contained: every image a data URI of a file the run wrote, no script, nothing fetched
    files = {base64.b64encode(p.read_bytes()).decode() for p in tmp_path.rglob("*.png")}
    assert len(page.images) == 1 + 6 * 4  # summary.png, 4 figures per finished job
    assert all(src.startswith("data:image/png;base64,") and src.split(",", 1)[1] in files for src in page.images)
    assert "script" not in page.tags and all(url.startswith(("data:", "#")) for url in page.urls)
    assert HOSTILE not in text and HOSTILE in page.text  # escaped, shown as text
    assert "<b>x</b>" not in text and "python -m lightning_resnet -m model=a,b seed=0,1,2 'note=<b>x</b>'" in page.text

    confused = [
        t for t in page.all_tables if t and t[0] == ["true class", "predicted as", "images", "share of the true class"]
    ]
    assert len(confused) == 6 and confused[0][1:] == [["dog", "cat", "2", "50.0%"], ["cat", "dog", "1", "25.0%"]]


def test_run_page_of_one_run_and_the_report_command(tmp_path, capsys):
    run = fake_job(tmp_path, "run", ["model=resnet18", "optimizer.lr=0.01"], 0.8)
    assert report_main([str(run)]) == 0
    page = Page((run / PAGE).read_text())
    assert len(page.images) == 4 and "summary" not in page.tables
    assert capsys.readouterr().out.strip() == (run / PAGE).resolve().as_uri()
    assert "python -m lightning_resnet model=resnet18 optimizer.lr=0.01" in page.text

    sweep = tmp_path / "sweep"
    fake_sweep(sweep)
    assert report_main([str(sweep)]) == 0  # rewrites the summary too
    assert (sweep / "summary.md").is_file() and len(Page((sweep / PAGE).read_text()).body_rows("summary")) == 7
    assert report_main([str(tmp_path / "empty")]) == 2


def test_a_page_that_cannot_be_built_is_logged_never_raised(tmp_path, caplog):
    job = fake_job(tmp_path, "run", [], 0.8)
    (job / ".hydra" / "config.yaml").write_text("monitor: [unclosed")
    with caplog.at_level(logging.WARNING):
        assert write_report_page_or_log(job) is None
    assert "report.html not written" in caplog.text and not (job / PAGE).exists()


def test_the_sweep_callback_writes_the_sweep_page(tmp_path):
    from lightning_resnet.sweeps.callbacks import SweepCallback

    fake_sweep(tmp_path)
    SweepCallback().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert (tmp_path / "summary.md").is_file() and (tmp_path / PAGE).is_file()


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_declares_the_published_figures_of_docs_studies(tmp_path, experiment):
    cfg = compose_config(tmp_path, [f"experiment={experiment}"])
    check_numbers(cfg)  # the `study:` key composes and has no number a builder would check
    with_hydra = compose_config(tmp_path, [f"experiment={experiment}"], return_hydra_config=True)
    assert not any("study" in key for key in run_hparams(with_hydra))  # not an HParams column
    study = parse_study(OmegaConf.to_container(cfg.study))
    assert "study:" in OmegaConf.to_yaml(cfg) and study.rows and study.columns  # saved in .hydra/config.yaml
    docs = (Path(__file__).resolve().parents[1] / "docs" / "studies.md").read_text()
    for row in study.rows:
        for value in (row.get("published") or {}).values():  # each figure is the one docs/studies.md prints
            assert f"{value}" in docs or f"{value:.4f}" in docs or f"~{value * 100:.0f} %" in docs, (row, value)


def test_study_rows_pool_seeds_into_mean_and_std_beside_the_published_figure(tmp_path):
    cfg = compose_config(tmp_path / "cfg", ["experiment=flatfoot_depth"])
    study_node = OmegaConf.to_container(cfg.study)
    values = {"resnet18": [0.90, 0.94], "resnet50": [0.91]}
    for model, accs in values.items():
        for seed, acc in enumerate(accs):
            fake_job(
                tmp_path / "sweep",
                f"model={model},seed={seed}",
                ["experiment=flatfoot_depth", f"model={model}", f"seed={seed}"],
                acc,
                config={"study": study_node},
                choices={"model": model},
            )
    sweep = tmp_path / "sweep"
    dirs = job_dirs(sweep)
    study = read_study(dirs[0])
    rows = compare(study, dirs, [read_job(d, "val/acc") for d in dirs])
    by_label = {row.label: row for row in rows}
    mean, std, n = by_label["ResNet18"].ours["best_val_acc"]
    assert (mean, std, n) == (pytest.approx(0.92), pytest.approx(np.std([0.90, 0.94], ddof=1)), 2)
    assert by_label["ResNet50"].ours["best_val_acc"] == (pytest.approx(0.91), 0.0, 1)
    assert by_label["ResNet34"].jobs == [] and by_label["ResNet34"].ours["best_val_acc"] is None

    write_summary(sweep)
    page = Page(write_report_page(sweep).read_text())
    study_table = next(t for t in page.all_tables if t[0][0] == "configuration" and "our jobs" in t[0])
    resnet18 = next(row for row in study_table if row[0] == "ResNet18")
    # published, ours, difference, for best train acc then best val acc
    assert resnet18[2:5] == ["0.9598", "0.9000 ± 0.0000 (2)", "-0.0598"]
    assert resnet18[5:8] == ["0.9404", f"0.9200 ± {np.std([0.90, 0.94], ddof=1):.4f} (2)", "-0.0204"]


@pytest.mark.slow
def test_a_training_run_ends_with_its_report_page(trained_digits_run):
    out, metrics = trained_digits_run
    page = Page((out / PAGE).read_text())
    assert len(page.images) == 4  # curves, confusion matrix, mistakes, embedding: no lr_find.png here
    report = next(t for t in page.all_tables if t[0] == ["class", "precision", "recall", "f1", "support"])
    assert [row[0] for row in report[1:11]] == [str(d) for d in range(10)]
    figures = page.all_tables[0]
    assert figures[1][figures[0].index("test acc")] == f"{metrics['test']['test/acc']:.4f}"


def test_a_large_sweep_embeds_the_figures_of_its_best_jobs_only(tmp_path, monkeypatch):
    from lightning_resnet.reporting import html_report

    monkeypatch.setattr(html_report, "FIGURES_FOR_BEST", 2)
    fake_sweep(tmp_path)
    write_summary(tmp_path)
    page = Page(write_report_page(tmp_path).read_text())
    assert len(page.images) == 1 + 2 * 4 and len(page.body_rows("summary")) == 7  # every job still listed
    assert page.text.count("in this job's own page") == 4  # the other finished jobs


def test_a_study_key_with_a_typo_is_an_error_naming_it():
    with pytest.raises(ValueError, match=r"study.columns.acc: unknown keys base frozen; valid: label, ours"):
        parse_study({"columns": {"acc": {"label": "val acc", "base frozen": None}}})  # `{label: val acc, base frozen}`
    with pytest.raises(ValueError, match=r"study.columns.acc.ours=\['history.json', 'x'\]: a list starting with"):
        parse_study({"columns": {"acc": {"ours": ["history.json", "x"]}}})
    with pytest.raises(ValueError, match=r"study.rows\[0\].published: f1 not among study.columns \(acc\)"):
        parse_study({"columns": {"acc": {"ours": ["metrics.json", "best"]}}, "rows": [{"published": {"f1": 0.9}}]})
