"""The debug group applies to any config and does what each option says."""

import pytest

from lightning_resnet.tasks.train import run

pytestmark = pytest.mark.slow


def test_debug_fast_runs_one_batch_per_stage(make_cfg):
    cfg = make_cfg("debug=fast")
    assert cfg.trainer.fast_dev_run is True
    metrics = run(cfg)
    assert metrics["epochs_run"] == 1
    assert metrics["best_checkpoint"] is None  # fast_dev_run writes no checkpoint: test used the trained weights
    assert metrics["report"]["samples"] == 32  # one test batch
    assert (metrics["test"]["test/acc"] * 32).is_integer()
    assert metrics["best_score"] is not None  # no checkpoint scored it: the last logged val/acc, for sweepers


def test_debug_overfit_learns_the_few_batches(make_cfg):
    cfg = make_cfg("debug=overfit", "trainer.max_epochs=15", "trainer.overfit_batches=1", "test=false")
    metrics = run(cfg)
    assert metrics["last"]["train/acc"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("name", "key", "value"), [("limit", "limit_train_batches", 3), ("profile", "profiler", "simple")]
)
def test_debug_options_compose(make_cfg, name, key, value):
    cfg = make_cfg(f"debug={name}", "model=resnet50")
    assert cfg.trainer[key] == value
    assert cfg.model.arch == "resnet50"  # the rest of the config is untouched
