"""Model cost: MACs agree with the published tables; the report reaches the log, TensorBoard and metrics.json."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from hydra import compose, initialize_config_dir
from torchvision.models.resnet import Bottleneck

from lightning_resnet import CONFIG_DIR
from lightning_resnet.models.cost import count_macs, model_cost
from lightning_resnet.tasks.info import describe
from lightning_resnet.tasks.train import run

# torchvision's model table, "GFLOPS" column (multiply-adds at 224 px), also `weights.meta["_ops"]`:
# https://pytorch.org/vision/stable/models.html#table-of-all-available-classification-weights
TORCHVISION_GFLOPS = {"resnet18": 1.81, "resnet34": 3.66, "resnet50": 4.09, "resnet101": 7.80, "resnet152": 11.51}
# He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016), Table 1, "FLOPs" row (multiply-adds).
# Its bottleneck nets stride the first 1x1 conv; torchvision's ("v1.5") stride the 3x3, which costs more.
PAPER_GFLOPS = {"resnet18": 1.8, "resnet34": 3.6, "resnet50": 3.8, "resnet101": 7.6, "resnet152": 11.3}


def meta_resnet(name: str, paper_strides: bool = False) -> torch.nn.Module:
    with torch.device("meta"):
        net = torchvision.models.get_model(name)
    if paper_strides:
        for block in net.modules():
            if isinstance(block, Bottleneck) and block.conv2.stride == (2, 2):
                block.conv1.stride, block.conv2.stride = (2, 2), (1, 1)
    return net


@pytest.mark.parametrize("name", sorted(TORCHVISION_GFLOPS))
def test_macs_at_224_agree_with_torchvision_and_the_paper(name):
    gmacs = count_macs(meta_resnet(name), 224) / 1e9
    assert gmacs == pytest.approx(TORCHVISION_GFLOPS[name], rel=0.02)
    assert count_macs(meta_resnet(name, paper_strides=True), 224) / 1e9 == pytest.approx(PAPER_GFLOPS[name], rel=0.02)


def test_parameters_trainable_and_total():
    net = torchvision.models.resnet18()
    net.layer1.requires_grad_(False)
    cost = model_cost(net, 64)
    assert cost.params_total == 11_689_512  # torchvision's published count
    assert cost.params_trainable == cost.params_total - sum(p.numel() for p in net.layer1.parameters())
    assert cost.macs == count_macs(net, 64) and cost.as_dict()["gmacs"] == pytest.approx(cost.macs / 1e9, abs=1e-4)


def test_info_task_applies_weights_size_and_the_finetune_freeze():
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("info", ["model=resnet50", "num_classes=1000", "data.image_size=224", "finetune=linear_probe"])
    cost = describe(cfg)
    assert cost.params_total == 25_557_032 and cost.params_trainable == 2048 * 1000 + 1000
    assert cost.gmacs == pytest.approx(4.09, rel=0.02)


@pytest.mark.slow
def test_train_run_reports_cost_to_metrics_json_and_tensorboard(make_cfg):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = make_cfg("trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1", "test=false")
    metrics = run(cfg)
    expected = model_cost(torchvision.models.resnet18(num_classes=10), 32)
    assert metrics["model"] == expected.as_dict()
    events = EventAccumulator(str(Path(cfg.paths.output_dir) / "tensorboard"))
    events.Reload()
    assert events.Scalars("model/gmacs")[0].value == pytest.approx(expected.gmacs)
    assert events.Scalars("model/params_trainable")[0].value == expected.params_trainable
