"""Prediction output files: a writer is a callable (path, predictions, class_names, topk), listed in
`conf/predict.yaml`'s `formats`, so a new layout is a new function and a new YAML entry."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from lightning_resnet.inference.predictor import Prediction


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
