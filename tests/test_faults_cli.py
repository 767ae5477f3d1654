"""Faults and bad inputs reach the user as one clear line, and never cost a result file.

Numbers typed as text fail at start-up naming the key (not inside torch after the data is built); a
`ConfigError` prints its message alone with exit status 2 from every Hydra task (the traceback with
`HYDRA_FULL_ERROR=1`); prediction files are safe to open in a spreadsheet, keep file names that are not
UTF-8 and are never left half-written; figures draw Korean class names with a CJK font.
"""

from __future__ import annotations

import csv
import importlib
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_resnet import CONFIG_DIR
from lightning_resnet.builders import build_datamodule
from lightning_resnet.errors import ConfigError
from lightning_resnet.inference.predictor import Prediction
from lightning_resnet.inference.writers import write_full_csv, write_kaggle_csv
from tests.conftest import FAST, compose_config, require_system_font

CLASSES = ["cat", "dog"]
# "고양이.png" as a cp949 (Korean Windows) system writes it: not valid UTF-8.
CP949_NAME = b"\xb0\xed\xbe\xe7\xc0\xcc.png"
CP949_CELL = r"\xb0\xed\xbe\xe7\xc0\xcc.png"
FORMULA_NAMES = ['=HYPERLINK("evil.example","click")', "+x", "-x", "@x"]


def cli(module: str, *overrides: str, cwd: Path) -> tuple[int, str, str]:
    """`python -m <module> overrides` without `HYDRA_FULL_ERROR`: (status, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    command = [sys.executable, "-m", module, *overrides]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout, done.stderr


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# 11. Numbers typed as text ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["optimizer=adam", "optimizer.lr=abc"], r"optimizer\.lr='abc'.*float"),
        (["optimizer=sgd", "optimizer.momentum=high"], r"optimizer\.momentum='high'"),
        (["scheduler.warmup_epochs=two"], r"scheduler\.warmup_epochs='two'"),
        (["loss=focal", "loss.gamma=strong"], r"loss\.gamma='strong'"),
        (["data.batch_size=big"], r"data\.batch_size='big'.*int"),
        (["trainer.max_epochs=1.5"], r"trainer\.max_epochs=1\.5.*int"),
        (["optimizer.lr=null"], r"optimizer\.lr=None"),
    ],
)
def test_text_where_a_number_belongs_fails_before_the_data_is_built(tmp_path, overrides, match):
    cfg = compose_config(tmp_path, [*FAST, *overrides])
    with pytest.raises(ConfigError, match=match):
        build_datamodule(cfg)


@pytest.mark.parametrize(
    "overrides",
    [
        ["optimizer.lr=1"],  # an int where a float is expected is a number all the same
        ["trainer.max_epochs=null", "+trainer.max_steps=2", "scheduler.T_max=3"],
        ["data.image_size=weights", "model.weights=IMAGENET1K_V1"],  # resolved from the weights before building
    ],
)
def test_numbers_and_documented_words_pass_the_check(tmp_path, overrides):
    from lightning_resnet.builders import check_numbers, pretrained_data_defaults

    cfg = compose_config(tmp_path, [*FAST, *overrides])
    check_numbers(cfg, data=pretrained_data_defaults(cfg))


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml")))
def test_every_experiment_config_passes_the_number_check(tmp_path, experiment):
    from lightning_resnet.builders import check_numbers

    check_numbers(compose_config(tmp_path, [f"experiment={experiment}"]))


# 12. A ConfigError is one message and exit status 2, from every task ------------------------------------


def test_config_error_is_one_message_and_status_2_before_the_data_is_set_up(tmp_path):
    """`python -m lightning_resnet optimizer.lr=abc`, a real process (the other entry points: in this one)."""
    overrides = ["optimizer=adam", "optimizer.lr=abc", f"hydra.run.dir={tmp_path / 'run'}"]
    status, stdout, stderr = cli("lightning_resnet", *overrides, cwd=tmp_path)
    assert "optimizer.lr='abc'" in stderr and "expected" in stderr and "float" in stderr, stderr[-2000:]
    assert "Traceback" not in stderr and "HYDRA_FULL_ERROR" not in stderr, stderr[-2000:]
    assert status == 2, stderr[-2000:]
    assert "DigitsDataModule" not in stdout + stderr  # the data module logs its splits once set up


@pytest.mark.parametrize(
    ("task", "overrides", "message"),
    [
        ("evaluate", ["ckpt_path=missing.ckpt"], "missing.ckpt: no such file"),
        ("predict", ["ckpt_path=missing.ckpt", "input=."], "missing.ckpt: no such file"),
        ("explain", ["ckpt_path=missing.ckpt", "input=."], "missing.ckpt: no such file"),
        ("export", ["ckpt_path=missing.ckpt"], "missing.ckpt: no such file"),
        ("info", ["model.arch=resnet19", "num_classes=10"], "model.arch='resnet19'"),
        ("train", ["loss=focal", "loss.gamma=-1", *FAST], "loss.gamma must be >= 0, got -1"),
    ],
)
def test_every_task_prints_a_config_error_alone(monkeypatch, tmp_path, capsys, task, overrides, message):
    """Every task's entry point, run in this process (as `python -m lightning_resnet.<task>` would)."""
    module = importlib.import_module(f"lightning_resnet.{task}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(sys, "argv", [task, *overrides, f"hydra.run.dir={tmp_path}"])
    with pytest.raises(SystemExit) as exited:
        module.main()
    stderr = capsys.readouterr().err
    assert message in stderr and "Traceback" not in stderr and "HYDRA_FULL_ERROR" not in stderr, stderr[-2000:]
    assert exited.value.code == 2


def test_bad_images_are_all_listed_under_the_short_report(monkeypatch, tmp_path, capsys):
    """`BadImagesError` is a `ConfigError`: its listing of every unreadable file is printed in full."""
    from lightning_resnet import train
    from tests.miniature import write_image

    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        for i in range(4):
            write_image(tmp_path / "data" / cls / f"{i}.png", rng)
    broken = [f"broken_{i:02d}.jpg" for i in range(25)]
    for name in broken:
        (tmp_path / "data" / "a" / name).write_bytes(b"\xff\xd8 not a jpeg")
    overrides = ["data=folder", f"data.root={tmp_path / 'data'}", "data.layout=classes", "data.cache_dir=cache"]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(sys, "argv", ["train", *overrides, f"hydra.run.dir={tmp_path / 'run'}"])
    with pytest.raises(SystemExit) as exited:
        train.main()
    stderr = capsys.readouterr().err
    assert exited.value.code == 2 and "Traceback" not in stderr, stderr[-2000:]
    assert all(name in stderr for name in broken), stderr[-3000:]


def test_hydra_full_error_keeps_the_traceback(monkeypatch, tmp_path):
    """With `HYDRA_FULL_ERROR=1` the ConfigError propagates (Python prints its traceback) instead of exiting 2."""
    from lightning_resnet import train

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    monkeypatch.setattr(sys, "argv", ["train", "loss=focal", "loss.gamma=-1", *FAST, f"hydra.run.dir={tmp_path}"])
    with pytest.raises(ConfigError, match="loss.gamma must be >= 0, got -1"):
        train.main()


@pytest.mark.slow
def test_a_sweep_records_a_config_error_and_goes_on(sweep_here, tmp_path):
    """`-m` with one bad job: the other job still runs; the bad one's status.json holds the message."""
    sweep_here(
        *FAST,
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1",
        "test=false",
        "loss=focal",
        "loss.gamma=-1,1",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    statuses = sorted((p.parent.name, p.read_text()) for p in (tmp_path / "sweep").glob("*/status.json"))
    assert len(statuses) == 2, statuses
    assert '"failed"' in statuses[0][1] and "loss.gamma must be >= 0" in statuses[0][1]
    assert '"ok"' in statuses[1][1]


# 14, 15. Prediction files: spreadsheet-safe, every file name kept, never half-written -------------------


def predictions(*names: str) -> list[Prediction]:
    return [Prediction(name, torch.tensor([0.25, 0.75])) for name in names]


@pytest.mark.parametrize("name", [*FORMULA_NAMES, "\tx", "\rx"])
def test_formula_prefixes_are_neutralised_in_text_cells_only(tmp_path, name):
    write_full_csv(tmp_path / "full.csv", predictions(f"{name}.png"), ["-1", "=cls"], topk=2)
    row = read_rows(tmp_path / "full.csv")[0]
    assert row["file"] == f"'{name}.png"
    assert row["label"] == row["top1"] == "'=cls" and row["top2"] == "'-1"
    assert row["prob_-1"] == "0.250000" and row["confidence"] == "0.750000"  # our numbers, not user text

    write_kaggle_csv(tmp_path / "kaggle.csv", predictions(f"{name}.png"), ["-1", "=cls"], topk=1)
    assert read_rows(tmp_path / "kaggle.csv") == [{"id": f"'{name}", "label": "'=cls"}]


def test_a_name_that_is_not_utf8_is_kept_escaped(tmp_path):
    name = os.fsdecode(CP949_NAME)  # what listing a folder gives for such a file
    write_full_csv(tmp_path / "full.csv", [*predictions(name), Prediction(name, None, f"{name}: broken")], CLASSES, 2)
    rows = read_rows(tmp_path / "full.csv")
    assert [row["file"] for row in rows] == [CP949_CELL, CP949_CELL]
    assert rows[1]["error"] == f"{CP949_CELL}: broken"
    write_kaggle_csv(tmp_path / "kaggle.csv", predictions(name), CLASSES, 1)
    assert read_rows(tmp_path / "kaggle.csv") == [{"id": CP949_CELL[: -len(".png")], "label": "dog"}]


@pytest.mark.parametrize("writer", [write_full_csv, write_kaggle_csv])
def test_a_failing_writer_leaves_the_previous_file_and_no_partial_one(tmp_path, writer):
    output = tmp_path / "predictions.csv"
    output.write_text("the previous run's predictions\n")
    broken = Prediction("b.png", torch.tensor([0.1, 0.2, 0.7]))  # a class the names do not have
    with pytest.raises(IndexError):
        writer(output, [*predictions(*(f"{i}.png" for i in range(100))), broken], CLASSES, 2)
    assert output.read_text() == "the previous run's predictions\n"
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.csv"]


def write_png(path: Path | bytes, value: int) -> None:
    with open(path, "wb") as handle:
        Image.fromarray(np.full((32, 32, 3), value, dtype=np.uint8)).save(handle, format="PNG")


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["csv", "kaggle"])
def test_predict_writes_spreadsheet_safe_cells_for_real_file_names(trained_digits_run, tmp_path, fmt):
    from lightning_resnet.tasks import predict

    images = tmp_path / "images"
    images.mkdir()
    for value, name in enumerate([*FORMULA_NAMES, "plain"]):
        write_png(images / f"{name}.png", 40 * value)
    output = tmp_path / "out.csv"
    overrides = [f"ckpt_path={trained_digits_run[1]['best_checkpoint']}", f"input={images}", f"output={output}"]
    predict.run(compose_config(tmp_path / "run", [*overrides, f"format={fmt}"], config_name="predict"))
    rows = read_rows(output)
    column, suffix = ("file", ".png") if fmt == "csv" else ("id", "")
    expected = sorted([*(f"'{name}{suffix}" for name in FORMULA_NAMES), f"plain{suffix}"], key=lambda c: c.lstrip("'"))
    assert sorted((row[column] for row in rows), key=lambda c: c.lstrip("'")) == expected
    assert all(row["label"] in [str(d) for d in range(10)] for row in rows)


@pytest.mark.slow
def test_predict_cli_keeps_a_cp949_file_name(trained_digits_run, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    write_png(os.path.join(os.fsencode(images), CP949_NAME), 0)
    write_png(images / "plain.png", 200)
    out = tmp_path / "out"
    out.mkdir()
    ckpt = trained_digits_run[1]["best_checkpoint"]
    overrides = [f"ckpt_path={ckpt}", f"input={images}", f"output={out / 'p.csv'}", f"hydra.run.dir={tmp_path / 'r'}"]
    status, _stdout, stderr = cli("lightning_resnet.predict", *overrides, cwd=tmp_path)
    assert status == 0, stderr[-3000:]
    assert sorted(row["file"] for row in read_rows(out / "p.csv")) == sorted([CP949_CELL, "plain.png"])
    assert [p.name for p in out.iterdir()] == ["p.csv"]  # no temporary file left beside it


# 16. Korean class names in figures ------------------------------------------------------------------------


def test_korean_class_names_are_drawn_with_a_cjk_font():
    require_system_font("ko", "fonts-noto-cjk")
    from lightning_resnet.reporting.figures import confusion_matrix_figure

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig = confusion_matrix_figure(np.array([[3, 1], [0, 4]]), ["고양이", "개"])
        fig.canvas.draw()
    missing = [str(w.message) for w in caught if "missing from font" in str(w.message)]
    assert not missing, missing[:3]


def test_no_cjk_font_is_logged_once(monkeypatch, caplog):
    from lightning_resnet.reporting import figures

    monkeypatch.setattr(figures, "CJK_FAMILIES", ("No Such Font",))
    figures.cjk_font.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger=figures.__name__), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # matplotlib's own glyph warnings
            for _ in range(2):
                figures.confusion_matrix_figure(np.array([[1, 0], [0, 1]]), ["고양이", "개"]).canvas.draw()
            figures.confusion_matrix_figure(np.array([[1, 0], [0, 1]]), ["cat", "dog"])
    finally:
        figures.cjk_font.cache_clear()
    warned = [r for r in caplog.records if "fonts-noto-cjk" in r.getMessage()]
    assert len(warned) == 1
