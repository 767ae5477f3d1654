"""Prediction output files: a writer is a callable (path, predictions, class_names, topk), listed in
`conf/predict.yaml`'s `formats`, so a new layout is a new function and a new YAML entry.

Every text cell (file names, ids, labels, errors) goes through `text_cell`, which keeps what a user's
files are called without letting it act in a spreadsheet:

- a cell starting with `=`, `+`, `-`, `@`, tab or carriage return, which a spreadsheet runs as a formula
  (a file named `=HYPERLINK(...).png`), gets a leading `'` (OWASP's rule against CSV injection). The
  numbers we write (probabilities, confidences) are not text cells and are left as they are;
- the bytes of a file name that are not UTF-8 (Korean names written by a cp949 system, which Python lists
  as surrogate escapes) are written as backslash escapes, `\\xb0\\xed.png`, where writing them would fail.

Files are written UTF-8, to a temporary file beside the output that replaces it once every row is
written: a failure leaves the previous file (or none), never half of one.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lightning_resnet.inference.predictor import Prediction

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def text_cell(value: str) -> str:
    """`value` as a CSV cell safe to open in a spreadsheet and to encode (see the module docstring)."""
    try:
        raw = value.encode("utf-8", "surrogateescape")  # undecodable file-name bytes back to bytes
    except UnicodeEncodeError:  # a lone surrogate that stands for no byte
        raw = value.encode("utf-8", "backslashreplace")
    text = raw.decode("utf-8", "backslashreplace")
    return f"'{text}" if text.startswith(FORMULA_PREFIXES) else text


@contextmanager
def csv_replacing(path: Path) -> Iterator[Any]:
    """A csv writer on a temporary file in `path`'s folder, renamed to `path` when the block succeeds."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        with partial.open("w", newline="", encoding="utf-8") as handle:
            yield csv.writer(handle)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def write_full_csv(path: Path, predictions: Sequence[Prediction], class_names: Sequence[str], topk: int) -> None:
    """file, label, confidence, top-k labels and probabilities, every class's probability, error."""
    k = min(topk, len(class_names))
    labels = [text_cell(name) for name in class_names]
    header = ["file", "label", "confidence"]
    header += [f"top{i}{suffix}" for i in range(1, k + 1) for suffix in ("", "_prob")]
    header += [text_cell(f"prob_{name}") for name in class_names] + ["error"]
    with csv_replacing(path) as writer:
        writer.writerow(header)
        for pred in predictions:
            if pred.probs is None:
                writer.writerow([text_cell(pred.file), *[""] * (len(header) - 2), text_cell(pred.error)])
                continue
            values, indices = pred.probs.topk(k)
            top = [cell for v, i in zip(values, indices, strict=True) for cell in (labels[i], f"{v:.6f}")]
            probs = [f"{p:.6f}" for p in pred.probs.tolist()]
            writer.writerow([text_cell(pred.file), top[0], top[1], *top, *probs, ""])


def write_kaggle_csv(path: Path, predictions: Sequence[Prediction], class_names: Sequence[str], topk: int) -> None:
    """The two-column `id,label` submission file; id = file name without extension."""
    labels = [text_cell(name) for name in class_names]
    with csv_replacing(path) as writer:
        writer.writerow(["id", "label"])
        for pred in predictions:
            label = labels[int(pred.probs.argmax())] if pred.probs is not None else ""
            writer.writerow([text_cell(Path(pred.file).stem), label])
