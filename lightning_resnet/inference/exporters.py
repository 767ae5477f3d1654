"""Exporters for `python -m lightning_resnet.export format=...`: write a file, run it back for parity.

Each exporter is built from `conf/export.yaml`'s `exporters` entry; a new format is a new class and
a new entry there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from lightning_resnet.utils import require


class OnnxExporter:
    """ONNX via `torch.onnx.export` (dynamo), checked with ONNX Runtime (extra: `export`).

    Args:
        opset: ONNX opset version.
        dynamic_batch: let the batch dimension vary in the exported graph.
    """

    suffix = ".onnx"

    def __init__(self, opset: int = 18, dynamic_batch: bool = True) -> None:
        self.opset = opset
        self.dynamic_batch = dynamic_batch

    def export(self, model: nn.Module, example: torch.Tensor, path: Path) -> None:
        require("onnx", "export")
        require("onnxscript", "export")
        dynamic = ({0: torch.export.Dim("batch", min=1)},) if self.dynamic_batch else None
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            input_names=["images"],
            output_names=["logits"],
            opset_version=self.opset,
            dynamic_shapes=dynamic,
        )
        program.save(str(path))

    def run(self, path: Path, images: torch.Tensor) -> np.ndarray:
        ort = require("onnxruntime", "export")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: images.numpy()})[0]


class TorchScriptExporter:
    """TorchScript by tracing (`torch.jit.trace`), checked by loading it back with `torch.jit.load`."""

    suffix = ".pt"

    def export(self, model: nn.Module, example: torch.Tensor, path: Path) -> None:
        with torch.no_grad():
            traced = torch.jit.trace(model, example)
        traced.save(str(path))

    def run(self, path: Path, images: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return torch.jit.load(str(path), map_location="cpu")(images).numpy()
