"""Checkpoints load weights-only, and anything else fails with the path and the reason."""

from __future__ import annotations

import pytest
import torch

from lightning_resnet.checkpoints import CHECKPOINT_KEY
from lightning_resnet.errors import ConfigError
from lightning_resnet.models.classifier import ResNetClassifier

pytestmark = pytest.mark.slow


@pytest.fixture
def checkpoint(trained_digits_run) -> dict:
    return torch.load(trained_digits_run[1]["best_checkpoint"], weights_only=True)


def test_a_checkpoint_from_an_incompatible_version_is_refused(checkpoint, tmp_path):
    checkpoint[CHECKPOINT_KEY]["version"] = "7.2.0"
    torch.save(checkpoint, tmp_path / "future.ckpt")
    with pytest.raises(ConfigError, match=r"future.ckpt was written by lightning-resnet 7.2.0, incompatible"):
        ResNetClassifier.from_checkpoint(tmp_path / "future.ckpt")


def test_another_models_checkpoint_is_refused(checkpoint, tmp_path):
    torch.save({"state_dict": checkpoint["state_dict"], "epoch": 3}, tmp_path / "other.ckpt")
    with pytest.raises(ConfigError, match=r"other.ckpt is not a lightning-resnet checkpoint \(missing hyper_param"):
        ResNetClassifier.from_checkpoint(tmp_path / "other.ckpt")

    checkpoint["hyper_parameters"]["arch"] = "resnet34"  # weights of a resnet18 under a resnet34 header
    torch.save(checkpoint, tmp_path / "mismatch.ckpt")
    with pytest.raises(ConfigError, match=r"mismatch.ckpt does not fit ResNetClassifier"):
        ResNetClassifier.from_checkpoint(tmp_path / "mismatch.ckpt")


class Payload:
    """Stands for arbitrary pickled code, which weights-only loading must refuse."""


def test_pickled_objects_are_not_loaded(tmp_path):
    torch.save({"anything": Payload()}, tmp_path / "pickled.ckpt")
    with pytest.raises(ConfigError, match=r"pickled.ckpt: cannot be read as a weights-only checkpoint"):
        ResNetClassifier.from_checkpoint(tmp_path / "pickled.ckpt")
    with pytest.raises(ConfigError, match=r"ckpt_path=.*missing.ckpt: no such file"):
        ResNetClassifier.from_checkpoint(tmp_path / "missing.ckpt")
