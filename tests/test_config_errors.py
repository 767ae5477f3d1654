"""Bad overrides fail before training, naming the key and the valid choices."""

import subprocess
import sys

import pytest
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

from lightning_resnet.builders import build, build_datamodule, build_model
from lightning_resnet.errors import ConfigError, WeightsUnavailableError


@pytest.mark.parametrize(
    ("override", "choices"),
    [("model=resnet19", ["resnet18", "resnet50"]), ("optimizer=rmsprop", ["adam", "adamw", "sgd"])],
)
def test_unknown_group_option_lists_the_choices(make_cfg, override, choices):
    with pytest.raises(MissingConfigException) as err:
        make_cfg(override)
    message = str(err.value)
    assert override.split("=")[1] in message
    assert all(choice in message for choice in choices)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["loss=focal", "loss.gamma=-1"], "loss.gamma must be >= 0, got -1"),
        (["model.weights=IMAGENET9"], "model.weights='IMAGENET9'.*valid: IMAGENET1K_V1"),
        (["model.arch=resnet19"], "model.arch='resnet19'.*valid:"),
        (["loss.label_smoothing=2"], "loss.label_smoothing"),
    ],
)
def test_bad_values_fail_while_building(make_cfg, overrides, match):
    cfg = make_cfg(*overrides)
    with pytest.raises(ConfigError, match=match):
        build_model(cfg, build_datamodule(cfg))


def test_bad_data_value_names_the_key(make_cfg):
    with pytest.raises(ConfigError, match="data.normalize='imagenett'"):
        build_datamodule(make_cfg("data.normalize=imagenett"))


@pytest.mark.slow
def test_command_line_error_before_training(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "lightning_resnet", "optimizer=rmsprop", f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "rmsprop" in result.stderr and "adamw" in result.stderr
    assert not (tmp_path / "checkpoints").exists()


class TwoArgumentError(Exception):
    """An exception whose constructor takes other arguments than a message (as many libraries' do)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path


def raise_two_argument_error() -> None:
    raise TwoArgumentError("weights.pt", "gone")


def raise_zero_division() -> float:
    return 1 / 0


@pytest.mark.parametrize(
    ("target", "error"), [("raise_two_argument_error", TwoArgumentError), ("raise_zero_division", ZeroDivisionError)]
)
def test_errors_inside_a_target_are_raised_as_they_are(target, error):
    with pytest.raises(error) as caught:
        build(OmegaConf.create({"_target_": f"tests.test_config_errors.{target}"}), "model")
    assert not isinstance(caught.value, ConfigError)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # no Hydra wrapper printed


def test_missing_weights_error_reaches_the_user_unchanged(make_cfg, monkeypatch):
    def unavailable(arch: str, name: str) -> None:
        raise WeightsUnavailableError(f"model.weights={name!r} needs resnet18-f37072fd.pth ...")

    monkeypatch.setattr("lightning_resnet.models.backbones.fetch_torchvision_weights", unavailable)
    cfg = make_cfg("model.weights=IMAGENET1K_V1")
    with pytest.raises(WeightsUnavailableError, match="needs resnet18-f37072fd.pth"):
        build_model(cfg, build_datamodule(cfg))


@pytest.mark.parametrize(
    ("node", "match"),
    [
        ({"_target_": "lightning_resnet.models.NoSuchModel"}, r"model: Error locating target"),
        (
            {"_target_": "lightning_resnet.models.ResNetClassifier", "arch": "resnet18", "nope": 1},
            r"(?s)model: .*unexpected keyword .*nope",
        ),
    ],
)
def test_hydras_own_errors_name_the_key(node, match):
    with pytest.raises(ConfigError, match=match):
        build(OmegaConf.create(node), "model")
