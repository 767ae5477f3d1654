"""The convert task: foreign weight files -> state dicts that `model.weights=/path/out.pt` loads.

    python -m lightning_resnet.convert keras-resnetv2 resnet152v2_weights_tf_dim_ordering_tf_kernels_notop.h5 out.pt

Keras files come in two layouts. The legacy HDF5 layout (Keras' published ImageNet files, Keras 2
saves, Keras 3 `model.save("x.h5")`) names every layer, so h5py alone reads it. Keras 3's native
`.weights.h5` names layers by class and position (`conv2d_17`), so the Keras application is rebuilt
and loaded to recover the names; that needs the `keras` extra (torch backend, no TensorFlow).
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from lightning_resnet.errors import ConfigError
from lightning_resnet.models.resnet_v2 import RESNET_V2_LAYOUTS, RESNET_V2S

# Keras' resnet_v2.preprocess_input (mode "tf") scales pixels to [-1, 1]: Normalize(0.5, 0.5) on [0, 1] inputs.
KERAS_V2_PREPROCESSING = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "image_size": 224}
KERAS_V2_CLASSES = {"resnet50v2": "ResNet50V2", "resnet101v2": "ResNet101V2", "resnet152v2": "ResNet152V2"}
BN_VARIABLES = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}

KerasWeights = dict[str, dict[str, np.ndarray]]  # layer name -> variable name (kernel, gamma, ...) -> array


def _h5py():
    try:
        import h5py
    except ImportError as err:
        raise ImportError("reading Keras weights needs h5py: pip install 'lightning-resnet[keras]'") from err
    return h5py


def read_keras_weights(path: Path) -> KerasWeights:
    """Per-layer weights of a Keras file, by layer name, in either layout."""
    h5py = _h5py()
    with h5py.File(path, "r") as file:
        root = file.get("model_weights", file)
        if "layer_names" in root.attrs:  # legacy layout: named layers, named variables
            weights: KerasWeights = {}
            for layer in (n.decode() if isinstance(n, bytes) else n for n in root.attrs["layer_names"]):
                group = root[layer]
                names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs.get("weight_names", [])]
                if names:
                    weights[layer] = {n.split("/")[-1].split(":")[0]: np.asarray(group[n]) for n in names}
            return weights
        if "layers" in file:
            return _read_keras3_weights(path, file)
    raise ConfigError(f"{path}: not a Keras weights file (neither legacy 'layer_names' nor Keras 3 'layers')")


def _read_keras3_weights(path: Path, file) -> KerasWeights:
    """Keras 3 `.weights.h5`: rebuild the matching application and load the file into it to get the names."""
    convs = sum(1 for name in file["layers"] if re.fullmatch(r"conv2d(_\d+)?", name))
    # conv layers: the stem, three per block, one projection per stage
    blocks = {1 + 3 * sum(layout) + 4: name for name, layout in RESNET_V2_LAYOUTS.items()}
    if convs not in blocks:
        raise ConfigError(f"{path}: {convs} conv layers match no ResNetV2 ({', '.join(RESNET_V2_LAYOUTS)})")
    dense = file["layers"].get("dense")
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except ImportError as err:
        raise ImportError(
            f"{path.name} is a Keras 3 .weights.h5 file, whose layers are named by position: reading it needs "
            "Keras (torch backend, no TensorFlow): pip install 'lightning-resnet[keras]'. Or convert a legacy .h5"
        ) from err
    application = getattr(keras.applications, KERAS_V2_CLASSES[blocks[convs]])
    top = {"classes": dense["vars"]["0"].shape[1], "classifier_activation": None} if dense is not None else {}
    model = application(weights=None, include_top=dense is not None, **top)
    model.load_weights(path)
    return {
        layer.name: {w.path.split("/")[-1]: np.asarray(keras.ops.convert_to_numpy(w)) for w in layer.weights}
        for layer in model.layers
        if layer.weights
    }


def _conv(kernel: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))  # HWIO -> OIHW


KERAS_BLOCK_PARTS = {
    "preact_bn": "preact_bn",
    "0_conv": "shortcut",
    "1_conv": "conv1",
    "1_bn": "bn1",
    "2_conv": "conv2",
    "2_bn": "bn2",
    "3_conv": "conv3",
}
KERAS_OTHER_LAYERS = {"conv1_conv": "conv1", "post_bn": "post_bn", "predictions": "fc"}


def _torch_name(layer: str) -> str:
    """Keras layer name -> module path in `ResNetV2` (Keras' conv2 ... conv5 stages are layer1 ... layer4)."""
    if layer in KERAS_OTHER_LAYERS:
        return KERAS_OTHER_LAYERS[layer]
    match = re.fullmatch(r"conv([2-5])_block(\d+)_(\w+)", layer)
    if match is None or match[3] not in KERAS_BLOCK_PARTS:
        raise ConfigError(f"Keras layer {layer!r} has no counterpart in ResNetV2")
    return f"layer{int(match[1]) - 1}.{int(match[2]) - 1}.{KERAS_BLOCK_PARTS[match[3]]}"


def keras_to_state_dict(weights: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for layer, variables in weights.items():
        prefix = _torch_name(layer)
        for name, value in variables.items():
            if name in BN_VARIABLES:
                state[f"{prefix}.{BN_VARIABLES[name]}"] = torch.from_numpy(np.array(value))
                state.setdefault(f"{prefix}.num_batches_tracked", torch.tensor(0))
            elif name == "kernel":
                state[f"{prefix}.weight"] = _conv(value) if value.ndim == 4 else torch.from_numpy(value.T.copy())
            elif name == "bias":
                state[f"{prefix}.bias"] = torch.from_numpy(np.array(value))
            else:
                raise ConfigError(f"Keras variable {layer}/{name} has no counterpart in ResNetV2")
    return state


def convert_keras_resnetv2(source: str | Path, target: str | Path) -> str:
    """Convert a Keras ResNet50V2/101V2/152V2 weights file; returns the architecture name it matched."""
    source = Path(source)
    if not source.is_file():
        raise ConfigError(f"no such Keras weights file: {source}")
    state = keras_to_state_dict(read_keras_weights(source))
    blocks = sum(1 for key in state if key.endswith(".preact_bn.weight"))
    arch = next((name for name, layout in RESNET_V2_LAYOUTS.items() if sum(layout) == blocks), None)
    if arch is None:
        valid = ", ".join(RESNET_V2_LAYOUTS)
        raise ConfigError(f"{source}: {blocks} pre-activation blocks match no ResNetV2 ({valid})")
    has_top = "fc.weight" in state
    net = RESNET_V2S[arch](**({"num_classes": state["fc.weight"].shape[0]} if has_top else {}))
    missing, unexpected = net.load_state_dict(state, strict=False)  # also checks every shape
    missing = [k for k in missing if has_top or not k.startswith("fc.")]
    if missing or unexpected:
        raise ConfigError(f"{source} does not fit {arch}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = {"arch": arch, "source": source.name, "preprocessing": KERAS_V2_PREPROCESSING, "state_dict": state}
    torch.save(payload, target)
    return arch


CONVERTERS = {"keras-resnetv2": convert_keras_resnetv2}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lightning_resnet.convert", description=__doc__.splitlines()[0])
    parser.add_argument("format", choices=sorted(CONVERTERS), help="what the source file is")
    parser.add_argument("source", type=Path, help="e.g. resnet152v2_weights_tf_dim_ordering_tf_kernels_notop.h5")
    parser.add_argument("target", type=Path, help="the .pt file to write (then: model.weights=<target>)")
    args = parser.parse_args(argv)
    arch = CONVERTERS[args.format](args.source, args.target)
    print(f"wrote {args.target} ({arch}); use it with: model={arch} model.weights={args.target.resolve()}")


if __name__ == "__main__":
    main()
