"""Bad overrides fail before training, naming the key and the valid choices."""

import subprocess
import sys

import pytest
from hydra.errors import MissingConfigException

from lightning_resnet.builders import build_datamodule, build_model
from lightning_resnet.errors import ConfigError


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
