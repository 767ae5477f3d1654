"""Pretrained weights set the data's normalisation and image size when the data config says `weights`."""

from __future__ import annotations

import pytest
import torch
import torchvision

from lightning_resnet.builders import build_datamodule, pretrained_data_defaults
from lightning_resnet.data.transforms import eval_transform
from lightning_resnet.models import ResNetClassifier
from lightning_resnet.models.pretrained import IMAGENET_PREPROCESSING, pretrained_preprocessing
from lightning_resnet.models.resnet_v2 import RESNET_V2S
from lightning_resnet.tasks.convert import KERAS_V2_PREPROCESSING


@pytest.fixture
def keras_file(tmp_path):
    """A file as `convert keras-resnetv2` writes it (random weights)."""
    source = RESNET_V2S["resnet50v2"]()
    path = tmp_path / "resnet50v2.pt"
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}
    torch.save({"arch": "resnet50v2", "preprocessing": KERAS_V2_PREPROCESSING, "state_dict": state}, path)
    return path, source


def test_torchvision_weights_give_their_own_transforms():
    # torchvision's presets: resize the shorter side to 232 (V2) or 256 (V1), then centre-crop 224
    assert pretrained_preprocessing("resnet50", "IMAGENET1K_V2") == {**IMAGENET_PREPROCESSING, "crop_ratio": 224 / 232}
    assert pretrained_preprocessing("resnet18", "IMAGENET1K_V1")["crop_ratio"] == 224 / 256
    assert pretrained_preprocessing("resnet50", None) == IMAGENET_PREPROCESSING  # nothing pretrained


def test_image_size_from_weights_resizes_and_crops_as_torchvision_does(make_cfg):
    weights = torchvision.models.ResNet50_Weights.IMAGENET1K_V2
    cfg = make_cfg("model=resnet50", "model.weights=IMAGENET1K_V2", "data.image_size=weights")
    assert pretrained_data_defaults(cfg) == {"image_size": 224, "crop_ratio": 224 / 232}
    preset = weights.transforms()
    spec = {**pretrained_preprocessing("resnet50", "IMAGENET1K_V2"), "image_size": 224}
    photo = torch.randint(0, 256, (3, 375, 500), dtype=torch.uint8)  # a 500x375 photo, not square
    ours, theirs = eval_transform(spec)(photo), preset(photo)
    assert ours.shape == theirs.shape == (3, 224, 224)
    one_level = 1.01 / 255 / min(spec["std"])  # the v1 and v2 resize kernels may round a pixel apart
    assert (ours - theirs).abs().max() < one_level  # resize 232 + centre crop 224, as torchvision's preset
    explicit = make_cfg(
        "model=resnet50", "model.weights=IMAGENET1K_V2", "data.image_size=weights", "+data.crop_ratio=0.5"
    )
    assert pretrained_data_defaults(explicit) == {"image_size": 224}  # an explicit crop_ratio wins


def test_converted_keras_file_loads_and_sets_minus_one_to_one_scaling(make_cfg, keras_file):
    path, source = keras_file
    model = ResNetClassifier(arch="resnet50v2", num_classes=4, weights=str(path))
    assert torch.equal(model.backbone.layer3[5].conv2.weight, source.layer3[5].conv2.weight)
    assert torch.equal(model.backbone.post_bn.running_var, source.post_bn.running_var)

    cfg = make_cfg("model=resnet50v2", f"model.weights={path}", "data.normalize=weights", "data.image_size=weights")
    assert pretrained_data_defaults(cfg) == {"normalize": {"mean": [0.5] * 3, "std": [0.5] * 3}, "image_size": 224}
    datamodule = build_datamodule(make_cfg("model=resnet50v2", f"model.weights={path}", "data.normalize=weights"))
    assert datamodule.mean == [0.5] * 3 and datamodule.std == [0.5] * 3
    assert datamodule.image_size == 32  # explicit value kept


def test_explicit_data_values_win(make_cfg, keras_file):
    path, _ = keras_file
    cfg = make_cfg("model=resnet50v2", f"model.weights={path}", "data.normalize=imagenet")
    assert pretrained_data_defaults(cfg) == {}
    assert build_datamodule(cfg).mean == pytest.approx(IMAGENET_PREPROCESSING["mean"])
