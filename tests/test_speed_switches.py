"""The performance switches are applied when set (memory format, precision plugin, compiled module,
batch-size finder) and training stays numerically sane; no timings are asserted."""

import itertools
import math
from pathlib import Path

import pytest
import torch
from pytorch_lightning.callbacks import BatchSizeFinder
from pytorch_lightning.plugins.precision import MixedPrecision
from torch._dynamo.eval_frame import OptimizedModule

from lightning_resnet.builders import build_datamodule, build_model, build_trainer
from lightning_resnet.errors import ConfigError
from lightning_resnet.models import ResNetClassifier

pytestmark = pytest.mark.slow

ONE_BATCH = ("debug=fast", "test=false", "callbacks.reports.train_samples=0", "data.batch_size=8")


def fit(cfg):
    """Fit as the train task does, returning the objects to inspect."""
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule)
    trainer = build_trainer(cfg)
    trainer.fit(model, datamodule=datamodule)
    return datamodule, model, trainer


def train_loss(trainer) -> float:
    return float(trainer.callback_metrics["train/loss"])


def test_channels_last_converts_the_weights_and_the_inputs(make_cfg):
    _, model, trainer = fit(make_cfg(*ONE_BATCH, "model.channels_last=true"))
    assert model.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    seen = []
    model.backbone.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    model(torch.randn(2, 3, 32, 32))
    assert seen[0].is_contiguous(memory_format=torch.channels_last)
    assert math.isfinite(train_loss(trainer))


def test_bf16_mixed_precision_trains_with_the_mixed_precision_plugin(make_cfg):
    _, _, trainer = fit(make_cfg(*ONE_BATCH, "trainer.precision=bf16-mixed"))
    assert isinstance(trainer.precision_plugin, MixedPrecision)
    assert trainer.precision_plugin.precision == "bf16-mixed" and trainer.precision == "bf16-mixed"
    assert math.isfinite(train_loss(trainer))


def test_compile_wraps_the_backbone_and_keeps_the_checkpoint_keys(make_cfg, tmp_path):
    # backend=eager: Dynamo traces the model (the wiring under test) without building C++ kernels,
    # which inductor would take a minute to do on 2 CPU cores.
    _, model, trainer = fit(make_cfg(*ONE_BATCH, "model.compile=true", "model.compile_backend=eager"))
    compiled = model.compiled_backbone
    assert isinstance(compiled, OptimizedModule) and compiled._orig_mod is model.backbone
    assert math.isfinite(train_loss(trainer))

    plain = ResNetClassifier(arch="resnet18", num_classes=10)
    assert list(model.state_dict()) == list(plain.state_dict())  # no `_orig_mod.` anywhere
    path = tmp_path / "compiled.ckpt"
    trainer.save_checkpoint(path)
    loaded = ResNetClassifier.from_checkpoint(path)  # a plain model for predict/export
    assert loaded.compiled_backbone is None
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model.eval()(x), atol=1e-5)


def test_compile_mode_is_checked():
    with pytest.raises(ConfigError, match="model.compile='fastest'; valid: false, true, default"):
        ResNetClassifier(compile="fastest")


def test_batch_size_finder_sets_the_data_module_batch_size(make_cfg):
    cfg = make_cfg(
        "callbacks=[default,batch_size_finder]",
        "callbacks.batch_size_finder.max_trials=2",
        "callbacks.batch_size_finder.steps_per_trial=1",
        "callbacks.reports.train_samples=0",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "test=false",
    )
    datamodule, _, trainer = fit(cfg)
    finder = next(c for c in trainer.callbacks if isinstance(c, BatchSizeFinder))
    assert finder.optimal_batch_size == datamodule.batch_size == 4  # 2 succeeded, then 4: two trials
    assert math.isfinite(train_loss(trainer))


def test_nonfinite_loss_stops_the_run_before_a_checkpoint_is_written(make_cfg):
    """The NaN check stays on the device between reads (no GPU sync per step); it still names the
    first bad step and fires before the epoch's checkpoint would store broken weights."""
    cfg = make_cfg(
        "test=false",
        "callbacks.reports.train_samples=0",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=4",
        "trainer.limit_val_batches=1",
        "trainer.log_every_n_steps=50",
        "+trainer.val_check_interval=3",  # validate and checkpoint mid-epoch, right after the first NaN
        "callbacks.model_checkpoint.monitor=null",  # save whatever the score: only the NaN check may stop it
    )
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule)
    forward, calls = model.loss_fn.forward, itertools.count()

    def nan_from_the_third_batch(logits, target):
        loss = forward(logits, target)
        return loss * math.nan if model.training and next(calls) >= 2 else loss

    model.loss_fn.forward = nan_from_the_third_batch
    with pytest.raises(FloatingPointError, match=r"NaN or infinite at step 2 .*optimizer\.lr"):
        build_trainer(cfg).fit(model, datamodule=datamodule)
    assert not list(Path(cfg.paths.output_dir).rglob("*.ckpt"))
