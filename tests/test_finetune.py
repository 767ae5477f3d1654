"""Fine-tuning strategies: exactly which parameters train, from which epoch, at which LR (short real runs)."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from torch.nn import BatchNorm2d

from lightning_resnet.builders import build_datamodule, build_model, build_trainer
from lightning_resnet.callbacks import FinetuneStrategy
from lightning_resnet.errors import ConfigError

EPOCHS = 3
SHORT = (
    f"trainer.max_epochs={EPOCHS}",
    "trainer.limit_train_batches=1",
    "data.batch_size=8",
    "trainer.limit_val_batches=0",  # no validation, no checkpoints: only the training loop matters here
    "callbacks.model_checkpoint=null",
    "logger=csv",
    "test=false",
)


def cosine(epoch: int) -> float:
    return 0.5 * (1 + math.cos(math.pi * epoch / EPOCHS))  # scheduler=cosine over the whole run


class Probe(pl.Callback):
    """At each epoch's first batch (after every epoch-start hook): what trains, BN modes, the optimizer's groups."""

    def __init__(self) -> None:
        self.epochs: list[dict] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx:
            return
        names = {id(p): n for n, p in pl_module.named_parameters()}
        self.epochs.append(
            {
                "trainable": {n for n, p in pl_module.named_parameters() if p.requires_grad},
                "bn_training": {n for n, m in pl_module.named_modules() if isinstance(m, BatchNorm2d) and m.training},
                "groups": {
                    g["name"]: {"lr": g["lr"], "params": {names[id(p)] for p in g["params"]}}
                    for g in trainer.optimizers[0].param_groups
                },
                "base_lrs": list(trainer.lr_scheduler_configs[0].scheduler.base_lrs),
            }
        )


def fit(make_cfg, *overrides: str):
    cfg = make_cfg(*SHORT, *overrides)
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = build_trainer(cfg)
    probe = Probe()
    trainer.callbacks.append(probe)
    trainer.fit(model, datamodule=datamodule)
    strategy = next(c for c in trainer.callbacks if isinstance(c, FinetuneStrategy))
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    return model, probe.epochs, strategy, changed


def params(model, *prefixes: str) -> set[str]:
    return {n for n, _ in model.named_parameters() if n.startswith(prefixes)}


@pytest.mark.slow
def test_full_trains_everything_at_one_lr(make_cfg):
    model, epochs, strategy, _ = fit(make_cfg, "finetune=full", "optimizer.lr=0.01")
    everything = {n for n, _ in model.named_parameters()}
    for epoch, seen in enumerate(epochs):
        assert seen["trainable"] == everything
        assert seen["groups"]["backbone"]["params"] | seen["groups"]["head"]["params"] == everything
        assert seen["groups"]["backbone"]["lr"] == seen["groups"]["head"]["lr"] == pytest.approx(0.01 * cosine(epoch))
    assert [p["trainable"] for p in strategy.phases] == [sum(p.numel() for p in model.parameters())] * EPOCHS


@pytest.mark.slow
def test_linear_probe_trains_the_head_only_and_keeps_bn_statistics(make_cfg):
    model, epochs, strategy, changed = fit(make_cfg, "finetune=linear_probe")
    head = params(model, "head.")
    for seen in epochs:
        assert seen["trainable"] == head
        assert list(seen["groups"]) == ["head"]  # no empty backbone group
        assert seen["bn_training"] == set()  # every BatchNorm is in the frozen backbone
    assert {k for k in changed if not k.startswith("head.")} == set()  # running stats included
    assert changed == {"head.1.weight", "head.1.bias"}
    assert strategy.phases[0]["trainable"] == sum(p.numel() for p in model.head.parameters())


@pytest.mark.slow
def test_partial_freezes_the_stages_before_layer4(make_cfg):
    model, epochs, _, changed = fit(make_cfg, "finetune=partial")
    trained = params(model, "backbone.layer4.", "head.")
    for seen in epochs:
        assert seen["trainable"] == trained
        assert seen["groups"]["backbone"]["params"] == params(model, "backbone.layer4.")
        layer4_bns = {
            n for n, m in model.named_modules() if n.startswith("backbone.layer4.") and isinstance(m, BatchNorm2d)
        }
        assert seen["bn_training"] == layer4_bns and len(layer4_bns) == 5  # bn1, bn2 x 2 blocks, downsample.1
    assert not any(k.startswith(("backbone.layer3.", "backbone.bn1", "backbone.conv1")) for k in changed)
    assert "backbone.layer3.1.bn2.running_mean" not in changed
    assert {"backbone.layer4.1.bn2.running_mean", "backbone.layer4.0.conv1.weight"} <= changed


@pytest.mark.slow
def test_freeze_unfreeze_switches_at_the_epoch_and_lr_it_says_and_follows_the_schedule(make_cfg):
    model, epochs, strategy, _ = fit(
        make_cfg,
        "finetune=freeze_unfreeze",
        "finetune.unfreeze_at_epoch=1",
        "optimizer.lr=0.01",
        "finetune.unfreeze_lr=1e-4",
    )
    head, everything = params(model, "head."), {n for n, _ in model.named_parameters()}
    assert epochs[0]["trainable"] == head and list(epochs[0]["groups"]) == ["head"]
    assert epochs[0]["groups"]["head"]["lr"] == pytest.approx(0.01)
    assert epochs[0]["bn_training"] == set()
    for epoch in (1, 2):  # the backbone group added at epoch 1 follows the cosine schedule like the head
        seen = epochs[epoch]
        assert seen["trainable"] == everything
        assert seen["groups"]["backbone"]["params"] == params(model, "backbone.")
        assert seen["groups"]["backbone"]["lr"] == pytest.approx(1e-4 * cosine(epoch))
        assert seen["groups"]["head"]["lr"] == pytest.approx(1e-4 * cosine(epoch))
        assert "backbone.layer1.0.bn1" in seen["bn_training"]
        assert seen["base_lrs"] == pytest.approx([1e-4, 1e-4])  # the scheduler knows the added group
    total = sum(p.numel() for p in model.parameters())
    assert [p["trainable"] for p in strategy.phases] == [sum(p.numel() for p in model.head.parameters()), total, total]


@pytest.mark.slow
def test_discriminative_backbone_lr_is_head_lr_times_k_on_the_schedule(make_cfg):
    _, epochs, _, _ = fit(make_cfg, "finetune=discriminative", "finetune.backbone_lr_scale=0.1", "optimizer.lr=0.01")
    for epoch, seen in enumerate(epochs):
        assert seen["groups"]["head"]["lr"] == pytest.approx(0.01 * cosine(epoch))
        assert seen["groups"]["backbone"]["lr"] == pytest.approx(0.001 * cosine(epoch))


@pytest.mark.slow
def test_frozen_bn_can_keep_training_its_statistics(make_cfg):
    _, epochs, _, changed = fit(
        make_cfg, "finetune=linear_probe", "finetune.frozen_bn_eval=false", "trainer.max_epochs=1"
    )
    assert "backbone.bn1" in epochs[0]["bn_training"]
    assert "backbone.bn1.running_mean" in changed and "backbone.bn1.weight" not in changed


def test_bad_stage_name_lists_the_stages(make_cfg):
    model = build_model(make_cfg(), build_datamodule(make_cfg()))
    with pytest.raises(ConfigError, match=r"finetune.freeze_before='layer9'.*conv1, bn1, layer1.*layer4.*head"):
        FinetuneStrategy(freeze_before="layer9").freeze_before_training(model)
    with pytest.raises(ConfigError, match="finetune.unfreeze_at_epoch"):
        FinetuneStrategy(unfreeze_at_epoch=2)
