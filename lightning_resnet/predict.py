"""The predict task: `python -m lightning_resnet.predict ckpt_path=... input=<file|folder> [output=...]`.

The checkpoint carries the class names and the eval transform, so no data config is needed.
Unreadable images do not stop the run: they are listed in the log and in the output with an error.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from lightning_resnet import CONFIG_DIR
from lightning_resnet.errors import ConfigError
from lightning_resnet.inference import class_probabilities, image_loader, list_images, resolve_device
from lightning_resnet.models.classifier import ResNetClassifier

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    file: str
    probs: torch.Tensor | None  # None: the file could not be read
    error: str = ""


def write_full_csv(path: Path, predictions: Sequence[Prediction], class_names: Sequence[str], topk: int) -> None:
    """file, label, confidence, top-k labels and probabilities, every class's probability, error."""
    k = min(topk, len(class_names))
    header = ["file", "label", "confidence"]
    header += [f"top{i}{suffix}" for i in range(1, k + 1) for suffix in ("", "_prob")]
    header += [f"prob_{name}" for name in class_names] + ["error"]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for pred in predictions:
            if pred.probs is None:
                writer.writerow([pred.file, *[""] * (len(header) - 2), pred.error])
                continue
            values, indices = pred.probs.topk(k)
            top = [cell for v, i in zip(values, indices, strict=True) for cell in (class_names[i], f"{v:.6f}")]
            probs = [f"{p:.6f}" for p in pred.probs.tolist()]
            writer.writerow([pred.file, top[0], top[1], *top, *probs, ""])


def write_kaggle_csv(path: Path, predictions: Sequence[Prediction], class_names: Sequence[str], topk: int) -> None:
    """The two-column `id,label` submission file; id = file name without extension."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "label"])
        for pred in predictions:
            label = class_names[int(pred.probs.argmax())] if pred.probs is not None else ""
            writer.writerow([Path(pred.file).stem, label])


def predict_files(
    model: ResNetClassifier, input_path: str | Path, batch_size: int = 64, flip_tta: bool = False
) -> list[Prediction]:
    """Class probabilities of every image under `input_path` (a file or a folder), in file order."""
    root = Path(input_path)
    paths = list_images(root)
    loader = image_loader(model, paths, batch_size)
    device = next(model.parameters()).device
    predictions: list[Prediction] = []
    for images, indices, ok in loader:
        probs = class_probabilities(model, images.to(device), flip_tta).cpu()
        for image_probs, index, readable in zip(probs, indices.tolist(), ok.tolist(), strict=True):
            name = str(paths[index].relative_to(root)) if root.is_dir() else paths[index].name
            if readable:
                predictions.append(Prediction(name, image_probs))
            else:
                predictions.append(Prediction(name, None, loader.dataset.errors.get(index, "unreadable")))
    return predictions


def run(cfg: DictConfig) -> list[Prediction]:
    if cfg.format not in cfg.formats:
        raise ConfigError(f"format={cfg.format!r}; valid: {', '.join(cfg.formats)}")
    if cfg.topk < 1:
        raise ConfigError(f"topk must be >= 1, got {cfg.topk}")
    model = ResNetClassifier.from_checkpoint(cfg.ckpt_path).to(resolve_device(cfg.device))
    class_names = [str(name) for name in model.hparams.class_names]
    predictions = predict_files(model, cfg.input, cfg.batch_size, cfg.tta)
    output = Path(cfg.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    instantiate(cfg.formats[cfg.format])(output, predictions, class_names, cfg.topk)
    failed = [p for p in predictions if p.probs is None]
    if failed:
        listing = "\n".join(f"  {p.file}: {p.error}" for p in failed)
        log.warning(
            "%d of %d inputs could not be read (listed in %s):\n%s", len(failed), len(predictions), output, listing
        )
    log.info("%d predictions written to %s (format=%s)", len(predictions) - len(failed), output, cfg.format)
    return predictions


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="predict")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
