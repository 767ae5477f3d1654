"""The one split function: seeded, stratified train/val/test indices of a labelled pool.

Every data module (digits, folders) and dataset preparation split through `split_indices`, so a
seed means the same split everywhere and k-fold sweeps cover the pool the same way.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

from lightning_resnet.errors import ConfigError

log = logging.getLogger(__name__)


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
    the class ratios. `class_names` name the classes (never their indices) in the error when one is too
    small to split, and in the warning when a part has no image of a class (a class of 2 images cannot be
    in train, val and test): that part still trains and scores, but its report scores the class 0.
    """
    labels = np.asarray(labels)
    if not 0.0 <= test_fraction < 1.0:
        raise ConfigError(f"data: the test fraction must be in [0, 1), got {test_fraction}")
    if num_folds is None and not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"data: the validation fraction must be in (0, 1), got {val_fraction}")
    if num_folds is not None and (num_folds < 2 or not 0 <= fold < num_folds):
        raise ConfigError(f"data.num_folds must be >= 2 and data.fold in [0, num_folds), got {num_folds}, {fold}")
    parts: dict[str, np.ndarray] = {}
    rest = np.arange(len(labels))  # the images being split when scikit-learn objects
    minimum = 2  # images of each class that step needs: one per part, or one per fold
    try:
        if test_fraction > 0:
            rest, parts["test"] = _carve(rest, labels, test_fraction, seed)
        minimum = num_folds or 2
        if num_folds is None:
            parts["train"], parts["val"] = _carve(rest, labels, val_fraction, seed)
        else:
            folds = StratifiedKFold(n_splits=num_folds, shuffle=True, random_state=seed)
            train, val = list(folds.split(np.zeros(len(rest)), labels[rest]))[fold]
            parts["train"], parts["val"] = np.sort(rest[train]), np.sort(rest[val])
    except ValueError as err:  # scikit-learn: a class too small to appear in every part
        raise ConfigError(_too_small_message(labels[rest], class_names, err, minimum)) from None
    parts = {name: parts[name] for name in ("train", "val", "test") if name in parts}
    _warn_missing_classes(labels, parts, class_names)
    return parts


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


def _name(label: int, class_names: Sequence[str] | None) -> str:
    return repr(str(class_names[label] if class_names else label))


def _images(count: int) -> str:
    return f"{count} image{'' if count == 1 else 's'}"


def _too_small_message(labels: np.ndarray, class_names: Sequence[str] | None, err: ValueError, minimum: int) -> str:
    """The classes too small to split, by name (scikit-learn lists their indices), or the smallest ones."""
    counts = Counter(labels.tolist())
    by_size = sorted(counts, key=lambda c: (counts[c], c))
    small = [c for c in by_size if counts[c] < minimum]
    named = ", ".join(f"{_name(c, class_names)} ({_images(counts[c])})" for c in (small or by_size[:5]))
    reason = re.sub(r"\s*Classes with too few members are: \[.*?\]\.?", "", str(err)).strip()
    head = f"data: cannot split {_images(len(labels))} into stratified parts"
    if small:
        need = f"{minimum} folds need" if minimum > 2 else "a split needs"
        return f"{head}: too few images in class {named}; {need} at least {minimum} of every class ({reason})"
    return f"{head}; smallest classes {named}: {reason}"


def _warn_missing_classes(labels: np.ndarray, parts: dict[str, np.ndarray], class_names: Sequence[str] | None) -> None:
    """Log, per part, the classes it has no image of (a class too small to be in every part)."""
    counts = Counter(labels.tolist())
    for part, rows in parts.items():
        missing = sorted(set(counts) - set(labels[rows].tolist()))
        if missing:
            named = ", ".join(f"{_name(c, class_names)} ({_images(counts[c])} in all)" for c in missing)
            log.warning(
                "data: the %s split has no image of class %s; its report scores them 0 and its macro averages "
                "count them as 0. Add images of them or change the fractions.",
                part,
                named,
            )
