"""The one split function: seeded, stratified train/val/test indices of a labelled pool.

Every data module (digits, folders) and dataset preparation split through `split_indices`, so a
seed means the same split everywhere and k-fold sweeps cover the pool the same way.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

from lightning_resnet.errors import ConfigError


def split_indices(
    labels: Sequence[int],
    val_fraction: float,
    seed: int,
    test_fraction: float = 0.0,
    num_folds: int | None = None,
    fold: int = 0,
    class_names: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Sorted indices {"train", "val"} (and "test" when `test_fraction` > 0) into `labels`.

    First `test_fraction` of the pool is held out as test. Of the rest, fold `fold` of a stratified
    `num_folds`-fold is the validation part when `num_folds` is set (a sweep over `fold=0..k-1` then
    uses disjoint validation folds covering the rest), else a `val_fraction` share of it. Each part keeps
    the class ratios. `class_names` name the classes in the error when one is too small to split.
    """
    labels = np.asarray(labels)
    if not 0.0 <= test_fraction < 1.0:
        raise ConfigError(f"data: the test fraction must be in [0, 1), got {test_fraction}")
    if num_folds is None and not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"data: the validation fraction must be in (0, 1), got {val_fraction}")
    if num_folds is not None and (num_folds < 2 or not 0 <= fold < num_folds):
        raise ConfigError(f"data.num_folds must be >= 2 and data.fold in [0, num_folds), got {num_folds}, {fold}")
    try:
        parts: dict[str, np.ndarray] = {}
        rest = np.arange(len(labels))
        if test_fraction > 0:
            rest, parts["test"] = _carve(rest, labels, test_fraction, seed)
        if num_folds is None:
            parts["train"], parts["val"] = _carve(rest, labels, val_fraction, seed)
        else:
            folds = StratifiedKFold(n_splits=num_folds, shuffle=True, random_state=seed)
            train, val = list(folds.split(np.zeros(len(rest)), labels[rest]))[fold]
            parts["train"], parts["val"] = np.sort(rest[train]), np.sort(rest[val])
    except ValueError as err:  # scikit-learn: a class too small to appear in every part
        raise ConfigError(_too_small_message(labels, class_names, err)) from None
    return {name: parts[name] for name in ("train", "val", "test") if name in parts}


def check_fractions(fractions: Sequence[float], lengths: tuple[int, ...] = (2, 3)) -> list[float]:
    """`data.fractions` as floats: [train, val] or [train, val, test] (as `lengths` allow), positive, sum 1."""
    values = [float(f) for f in fractions]
    if len(values) not in lengths or min(values) <= 0 or not np.isclose(sum(values), 1.0):
        names = " or ".join(str(["train", "val", "test"][:n]).replace("'", "") for n in lengths)
        raise ConfigError(f"data.fractions must be positive {names} summing to 1, got {values}")
    return values


def _carve(indices: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, carved): a stratified `fraction` of `indices` carved out, both sorted."""
    kept, carved = train_test_split(indices, train_size=1.0 - fraction, stratify=labels[indices], random_state=seed)
    return np.sort(kept), np.sort(carved)


def _too_small_message(labels: np.ndarray, class_names: Sequence[str] | None, err: ValueError) -> str:
    counts = Counter(labels.tolist())
    smallest = sorted(counts.items(), key=lambda item: (item[1], item[0]))[:5]
    named = ", ".join(f"{class_names[c] if class_names else c}: {n}" for c, n in smallest)
    return f"data: cannot split {len(labels)} images into stratified parts; smallest classes ({named}): {err}"
