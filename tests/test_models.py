from pathlib import Path

import pytest
import torch
import torchvision
from hydra.utils import instantiate

from lightning_resnet import CONFIG_DIR
from lightning_resnet.errors import ConfigError, WeightsUnavailableError
from lightning_resnet.models import ResNetClassifier, build_backbone
from lightning_resnet.models.backbones import TORCHVISION_RESNETS

MODEL_CONFIGS = sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml"))
SMALL = ("resnet18", "resnet34", "resnet50", "plain18", "resnet50v2")  # the rest build in `make test` only
FEATURES = {"resnet18": 512, "resnet34": 512, "wide_resnet50_2": 2048, "resnext101_64x4d": 2048}


def test_every_torchvision_resnet_has_a_config():
    expected = {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d"}
    expected |= {"resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2"}
    assert expected <= set(MODEL_CONFIGS)


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n not in SMALL else n for n in MODEL_CONFIGS]
)
def test_model_config_builds_with_the_data_class_count(make_cfg, name):
    cfg = make_cfg(f"model={name}", "model.head_dropout=0.3")
    model = instantiate(cfg.model, num_classes=7)
    assert isinstance(model, ResNetClassifier)
    assert model.hparams.arch == name
    dropout, linear = model.head
    assert dropout.p == 0.3 and linear.out_features == 7
    assert linear.in_features == FEATURES.get(name, linear.in_features)
    if name in TORCHVISION_RESNETS:  # same backbone as torchvision, minus fc
        reference = torchvision.models.get_model(name)
        own = sum(p.numel() for p in model.backbone.parameters())
        assert own == sum(p.numel() for n, p in reference.named_parameters() if not n.startswith("fc."))
    model.eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 7)


def test_unknown_arch_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"model.arch='resnet19'.*resnet18.*wide_resnet50_2"):
        build_backbone("resnet19")


def test_unknown_weights_name_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"model.weights='IMAGENET9'.*IMAGENET1K_V1.*DEFAULT.*null"):
        build_backbone("resnet50", "IMAGENET9")


def test_offline_download_fails_fast_with_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("<urlopen error [Errno -2] Name or service not known>")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsUnavailableError) as err:
        build_backbone("resnet18", "IMAGENET1K_V1")
    message = str(err.value)
    assert "resnet18-f37072fd.pth" in message
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert "model.weights=/path/to/" in message


def test_weights_file_placed_in_the_cache_is_used_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    source = torchvision.models.resnet18()
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(source.state_dict(), cache / "resnet18-f37072fd.pth")  # where the error message says
    net, width = build_backbone("resnet18", "DEFAULT")
    assert width == 512
    assert torch.equal(net.conv1.weight, source.conv1.weight)


def test_local_state_dict_and_classifier_checkpoint(tmp_path):
    source = torchvision.models.resnet18(num_classes=5)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    net, _ = build_backbone("resnet18", str(path))
    assert torch.equal(net.layer4[1].conv2.weight, source.layer4[1].conv2.weight)

    # A ResNetClassifier checkpoint's backbone can seed another run (head dropped).
    model = ResNetClassifier(arch="resnet18", num_classes=3)
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": model.state_dict()}, ckpt)
    net, _ = build_backbone("resnet18", str(ckpt))
    assert torch.equal(net.conv1.weight, model.backbone.conv1.weight)


def test_weights_that_do_not_fit_are_reported(tmp_path):
    path = tmp_path / "r50.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    with pytest.raises(ConfigError, match="does not fit resnet50"):
        build_backbone("resnet50", str(path))
    with pytest.raises(ConfigError, match="no such file"):
        build_backbone("resnet18", str(Path(tmp_path) / "missing.pth"))
