"""ResNetV2 matches Keras' ResNet50V2 layer for layer: converted Keras weights give the same logits."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from lightning_resnet.errors import ConfigError
from lightning_resnet.models import ResNetClassifier
from lightning_resnet.models.resnet_v2 import RESNET_V2S, PreActBottleneck
from lightning_resnet.tasks.convert import main as convert_main
from tests.conftest import require_extra

# Keras' torch backend converts tensors with np.array(x) and numpy 2 warns on every call.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _params_and_bn_stats(net: torch.nn.Module) -> int:
    """Keras' count_params(): weights plus BatchNorm moving statistics (non-trainable variables)."""
    params = sum(p.numel() for n, p in net.named_parameters() if not n.startswith("fc."))
    return params + sum(b.numel() for n, b in net.named_buffers() if "running_" in n)


def test_resnet152v2_has_keras_parameter_count():
    # The yoga study's (and Keras') ResNet152V2 without top: 58,331,648 parameters.
    assert _params_and_bn_stats(RESNET_V2S["resnet152v2"]()) == 58_331_648


def test_stages_downsample_in_their_last_block_like_keras():
    net = RESNET_V2S["resnet50v2"]()
    for name, expected in {"layer1": 2, "layer2": 2, "layer3": 2, "layer4": 1}.items():
        blocks: list[PreActBottleneck] = list(getattr(net, name))
        assert [b.conv2.stride[0] for b in blocks] == [1] * (len(blocks) - 1) + [expected]
        assert blocks[0].project and isinstance(blocks[0].shortcut, torch.nn.Conv2d)
        assert blocks[0].shortcut.stride == (1, 1) and blocks[0].shortcut.bias is not None
        assert not any(b.project for b in blocks[1:])
        assert blocks[0].conv1.bias is None and blocks[0].conv2.bias is None and blocks[0].conv3.bias is not None
    assert net.conv1.bias is not None and net.post_bn.eps == pytest.approx(1.001e-5)
    assert net.post_bn.momentum == pytest.approx(0.01)
    sizes, x = [], torch.zeros(1, 3, 224, 224, device="meta")
    net = net.to("meta")
    for stage in (net.conv1, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4):
        x = stage(x)
        sizes.append(x.shape[-1])
    assert sizes == [112, 56, 28, 14, 7, 7]  # Keras' 7x7 final map: layer4 keeps its resolution


# -- equivalence with Keras (optional extra) ---------------------------------------------------------
@pytest.fixture(scope="module")
def keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = require_extra("keras", "keras")
    if keras.backend.backend() != "torch":
        pytest.skip("Keras was imported with another backend than torch")
    return keras


def _randomize(model, seed: int = 0) -> None:
    """Random weights everywhere, BatchNorm moving statistics included (Keras initialises them to 0/1)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        values = []
        for weight in layer.weights:
            shape = tuple(weight.shape)
            if weight.path.endswith(("moving_variance", "gamma")):
                values.append(rng.uniform(0.5, 1.5, shape).astype("float32"))
            else:
                fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 10
                values.append((rng.standard_normal(shape) / np.sqrt(fan_in)).astype("float32"))
        if values:
            layer.set_weights(values)


def _keras_predict(model, images: np.ndarray) -> np.ndarray:
    return np.asarray(model(images, training=False).detach().cpu())


@pytest.fixture(scope="module")
def keras_resnet50v2(keras, tmp_path_factory):
    """A randomised Keras ResNet50V2 with a 5-class top, saved in both Keras file layouts."""
    model = keras.applications.ResNet50V2(
        weights=None, include_top=True, input_shape=(64, 64, 3), classes=5, classifier_activation=None
    )
    _randomize(model)
    folder = tmp_path_factory.mktemp("keras")
    model.save_weights(folder / "keras.weights.h5")  # Keras 3 native layout: layers named by position
    model.save(folder / "keras.h5")  # legacy HDF5 layout, as Keras' published ImageNet files: layers named
    return model, folder


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["keras.weights.h5", "keras.h5"])
def test_converted_keras_resnet50v2_gives_the_same_logits(keras_resnet50v2, tmp_path, layout):
    model, folder = keras_resnet50v2
    target = tmp_path / "converted.pt"
    convert_main(["keras-resnetv2", str(folder / layout), str(target)])

    payload = torch.load(target, weights_only=True)
    assert payload["arch"] == "resnet50v2" and payload["preprocessing"]["mean"] == [0.5, 0.5, 0.5]
    net = RESNET_V2S["resnet50v2"](num_classes=5).eval()
    net.load_state_dict(payload["state_dict"])  # strict: every key converted

    images = np.random.default_rng(1).uniform(-1, 1, (2, 64, 64, 3)).astype("float32")
    expected = _keras_predict(model, images)
    with torch.no_grad():
        logits = net(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()).numpy()
    assert np.abs(expected).max() > 0.1  # a real signal, not two zero vectors
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_converted_notop_file_loads_as_model_weights(keras, tmp_path):
    """Like Keras' `*_notop.h5` ImageNet file: the classifier's backbone gives Keras' pooled features."""
    model = keras.applications.ResNet50V2(weights=None, include_top=False, input_shape=(32, 32, 3), pooling="avg")
    _randomize(model, seed=3)
    source = tmp_path / "notop.h5"
    model.save(source)
    target = tmp_path / "notop.pt"
    convert_main(["keras-resnetv2", str(source), str(target)])

    classifier = ResNetClassifier(arch="resnet50v2", num_classes=3, weights=str(target)).eval()
    images = np.random.default_rng(2).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    with torch.no_grad():
        features = classifier.features(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()).numpy()
    np.testing.assert_allclose(features, _keras_predict(model, images), rtol=1e-4, atol=1e-4)


def test_converter_rejects_what_is_not_a_keras_resnetv2(tmp_path):
    h5py = require_extra("h5py", "keras")
    with pytest.raises(ConfigError, match="no such Keras weights file"):
        convert_main(["keras-resnetv2", str(tmp_path / "missing.h5"), str(tmp_path / "out.pt")])
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as file:
        file.create_group("something")
    with pytest.raises(ConfigError, match="not a Keras weights file"):
        convert_main(["keras-resnetv2", str(path), str(tmp_path / "out.pt")])
