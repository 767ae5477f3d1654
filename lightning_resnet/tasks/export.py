"""The export task: `python -m lightning_resnet.export ckpt_path=... format=onnx|torchscript`.

Writes the model (images in, logits out) and `<name>.json` with the class names and the eval
transform a deployment needs, then runs the exported file on random inputs and fails unless its
logits equal PyTorch's within `atol`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from lightning_resnet import CONFIG_DIR
from lightning_resnet.errors import ConfigError, exit_on_config_error
from lightning_resnet.models.classifier import ResNetClassifier

log = logging.getLogger(__name__)


class ExportParityError(RuntimeError):
    """The exported model's outputs differ from PyTorch's beyond the tolerance."""


def parity_gap(exporter: Any, path: Path, model: ResNetClassifier, images: torch.Tensor) -> float:
    """Largest absolute difference between the exported file's logits and the PyTorch model's."""
    with torch.no_grad():
        expected = model(images).numpy()
    return float(np.abs(exporter.run(path, images) - expected).max())


def run(cfg: DictConfig) -> dict[str, Any]:
    if cfg.format not in cfg.exporters:
        raise ConfigError(f"format={cfg.format!r}; valid: {', '.join(cfg.exporters)}")
    exporter = instantiate(cfg.exporters[cfg.format])
    model = ResNetClassifier.from_checkpoint(cfg.ckpt_path)
    size = model.preprocessing["image_size"]
    generator = torch.Generator().manual_seed(0)
    output = Path(cfg.output or Path(cfg.paths.output_dir) / f"model{exporter.suffix}")
    output.parent.mkdir(parents=True, exist_ok=True)

    # The bare network (images -> logits): tracing a LightningModule would touch its Trainer properties.
    network = torch.nn.Sequential(model.backbone, model.head).eval()
    exporter.export(network, torch.randn(2, 3, size, size, generator=generator), output)
    # Another batch size than the example's, so a batch dimension frozen at export shows up here.
    gap = parity_gap(exporter, output, model, torch.randn(3, 3, size, size, generator=generator))
    if gap > cfg.atol:
        raise ExportParityError(f"{output}: exported logits differ from PyTorch's by {gap:.3g} > atol={cfg.atol}")
    info = {
        "format": cfg.format,
        "file": output.name,
        "checkpoint": str(cfg.ckpt_path),
        "class_names": [str(n) for n in model.hparams.class_names or []],
        "preprocessing": model.preprocessing,
        "input": {"name": "images", "shape": ["batch", 3, size, size], "dtype": "float32"},
        "parity_max_abs_diff": gap,
        "atol": cfg.atol,
    }
    output.with_suffix(".json").write_text(json.dumps(info, indent=2))
    log.info("exported %s (parity: max |diff| %.2e <= %g)", output, gap, cfg.atol)
    return info


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="export")
@exit_on_config_error
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
