"""Logs that read well off a terminal (one line per epoch when stdout is not a TTY) and the LR finder."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from pytorch_lightning.callbacks import TQDMProgressBar

from lightning_resnet.callbacks.progress import EpochLogLine, progress_bar
from lightning_resnet.compat import quiet_search_bar
from lightning_resnet.errors import ConfigError
from tests.conftest import FAST, read_json

TINY = ["trainer.max_epochs=2", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "test=false"]
EPOCH_LINE = re.compile(
    r"epoch (\d+)/2  train loss [\d.]+ acc [\d.]+  val loss [\d.]+ acc [\d.]+  lr \d\.\d\de[-+]\d+  [\d.]+s"
)


def test_terminal_gets_the_tqdm_bar(monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    bar = progress_bar(refresh_rate=10)
    assert isinstance(bar, TQDMProgressBar) and bar.refresh_rate == 10
    assert isinstance(progress_bar(refresh_rate=0), EpochLogLine)  # refresh_rate=0: no bar, epoch lines


def test_pipe_gets_epoch_lines(monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    assert isinstance(progress_bar(refresh_rate=10), EpochLogLine)
    assert isinstance(progress_bar(refresh_rate=10, style="bar"), TQDMProgressBar)
    with pytest.raises(ConfigError, match="style"):
        progress_bar(style="fancy")


def test_the_finder_bar_is_quiet_only_when_asked():
    """Pins the private name it replaces: `pytorch_lightning.tuner.lr_finder.tqdm`, the search's bar."""
    from pytorch_lightning.tuner import lr_finder as lightning_lr_finder

    original = lightning_lr_finder.tqdm
    with quiet_search_bar(True):
        bar = lightning_lr_finder.tqdm(desc="Finding best initial lr", total=3)
        assert bar.disable
        bar.close()
    assert lightning_lr_finder.tqdm is original
    with quiet_search_bar(False):
        assert lightning_lr_finder.tqdm is original


@pytest.mark.slow
def test_non_tty_run_logs_one_line_per_epoch_and_no_bar_refreshes_even_with_the_lr_finder(tmp_path):
    finder = ["callbacks=[default,lr_finder]", "callbacks.lr_finder.num_training=8"]
    finder += ["callbacks.lr_finder.early_stop_threshold=null", "trainer.limit_train_batches=8"]
    overrides = [f"hydra.run.dir={tmp_path / 'run'}", *FAST, *TINY, *finder, "callbacks.reports=null"]
    done = subprocess.run(
        [sys.executable, "-m", "lightning_resnet", *overrides],
        cwd=tmp_path,
        capture_output=True,  # pipes: stdout and stderr are no TTY
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Finding best initial lr" not in output and "\r" not in output, output  # no tqdm refresh
    assert len(re.findall(r"lr finder: suggestion \S+ \(8 steps from 1e-06 to 1\)", output)) == 1, output
    assert EPOCH_LINE.findall(output) == ["1", "2"], output
    assert len(EPOCH_LINE.findall((tmp_path / "run" / "train.log").read_text())) == 2


@pytest.mark.slow
def test_lr_find_trains_with_the_suggestion(make_cfg):
    from lightning_resnet.tasks.train import run

    cfg = make_cfg(
        *TINY,
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=20",  # the search's steps come from the training batches
        "callbacks=[default,lr_finder]",
        "callbacks.reports=null",
        "callbacks.lr_finder.num_training=20",
        "callbacks.lr_finder.early_stop_threshold=null",
        "optimizer.lr=find",
    )
    metrics = run(cfg)
    out = Path(cfg.paths.output_dir)
    found = metrics["lr_find"]
    assert found["num_training"] == 20 and found["min_lr"] == 1e-6 and found["max_lr"] == 1.0
    assert found["suggestion"] is not None and 1e-6 < found["suggestion"] < 1.0
    assert (out / "lr_find.png").stat().st_size > 1000
    assert read_json(out / "metrics.json")["lr_find"] == found
    epoch0 = read_json(out / "history.json")[0]
    assert epoch0["lr/head"] == pytest.approx(found["suggestion"])  # cosine without warmup: factor 1 at epoch 0


def test_lr_find_without_the_callback_fails_early(make_cfg):
    from lightning_resnet.tasks.train import run

    with pytest.raises(ConfigError, match=re.escape("add callbacks=[default,lr_finder]")):
        run(make_cfg(*TINY, "optimizer.lr=find"))
