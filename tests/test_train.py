"""End to end: the train task on the embedded digits set, in process and through the CLI."""

import math
from pathlib import Path

import pytest
import torch

from lightning_resnet.builders import build_datamodule, build_loss
from lightning_resnet.models import ResNetClassifier
from lightning_resnet.models.classifier import CHECKPOINT_KEY
from lightning_resnet.tasks.train import run
from tests.conftest import read_json

pytestmark = pytest.mark.slow


def test_digits_run_learns_and_writes_its_outputs(trained_digits_run, make_cfg):
    out, metrics = trained_digits_run

    assert metrics["test"]["test/acc"] > 0.8  # chance is 0.1
    assert metrics == read_json(out / "metrics.json")
    assert metrics["epochs_run"] == 2
    assert metrics["best_score"] == pytest.approx(metrics["best"]["val/acc"])
    assert set(metrics["test"]) >= {"test/acc", "test/f1", "test/precision", "test/recall", "test/loss"}

    checkpoints = {p.name for p in (out / "checkpoints").iterdir()}
    assert "last.ckpt" in checkpoints and any(n.startswith("best-epoch") for n in checkpoints)
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))

    history = read_json(out / "history.json")
    assert [row["epoch"] for row in history] == [0, 1]
    expected = [0.002 * 0.5 * (1 + math.cos(math.pi * e / 2)) for e in range(2)]
    assert [row["lr/head"] for row in history] == pytest.approx(expected)

    # The best checkpoint is self-contained: weights_only load, class names, preprocessing.
    raw = torch.load(metrics["best_checkpoint"], weights_only=True)
    assert raw[CHECKPOINT_KEY]["class_names"] == [str(i) for i in range(10)]
    assert raw[CHECKPOINT_KEY]["preprocessing"]["image_size"] == 32
    model = ResNetClassifier.from_checkpoint(metrics["best_checkpoint"])
    dm = build_datamodule(make_cfg())  # the run's data settings (FAST)
    correct = total = 0
    with torch.no_grad():
        for x, y in map(dm.model_input, dm.test_dataloader()):
            correct += (model(x).argmax(1) == y).sum().item()
            total += len(y)
    assert correct / total == pytest.approx(metrics["test"]["test/acc"], abs=1e-6)


def test_same_command_twice_gives_the_same_metrics(make_cfg, tmp_path):
    overrides = ("trainer.max_epochs=1", "trainer.limit_train_batches=4", "model.head_dropout=0.2")
    overrides += ("callbacks.reports=null",)
    first = run(make_cfg(*overrides, f"paths.output_dir={tmp_path / 'a'}"))
    second = run(make_cfg(*overrides, f"paths.output_dir={tmp_path / 'b'}"))
    assert first["test"] == second["test"]
    third = run(make_cfg(*overrides, "seed=7", f"paths.output_dir={tmp_path / 'c'}"))
    assert third["test"] != first["test"]


def test_resume_from_last_checkpoint_continues_the_epochs(make_cfg):
    fast = ("trainer.limit_train_batches=3", "trainer.limit_val_batches=2")
    first = run(make_cfg("trainer.max_epochs=1", *fast, "test=false"))
    last = Path(first["best_checkpoint"]).parent / "last.ckpt"
    resumed = run(make_cfg("trainer.max_epochs=2", *fast, f"ckpt_path={last}", "loss=focal"))
    assert resumed["epochs_run"] == 2  # epoch 0 restored from the checkpoint's history, epoch 1 trained
    assert resumed["test"]["test/acc"] > 0


def test_balanced_class_weights_come_from_the_training_labels(make_cfg):
    cfg = make_cfg("loss.class_weights=balanced")
    dm = build_datamodule(make_cfg())  # the run's data settings (FAST)
    counts = torch.tensor(dm.class_counts(), dtype=torch.float)
    loss = build_loss(cfg, dm)
    assert torch.allclose(loss.weight, counts.sum() / (10 * counts))
