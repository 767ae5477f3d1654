"""Seeded, stratified index splits shared by every data module (and k-fold sweeps)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

from lightning_resnet.errors import ConfigError


def stratified_split(labels: Sequence[int], fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Split indices into parts of the given fractions (summing to 1), each keeping the class ratios."""
    fractions = [float(f) for f in fractions]
    if any(f <= 0 for f in fractions) or not np.isclose(sum(fractions), 1.0):
        raise ConfigError(f"data split fractions must be positive and sum to 1, got {fractions}")
    labels = np.asarray(labels)
    remaining = np.arange(len(labels))
    parts: list[np.ndarray] = []
    left = 1.0
    for fraction in fractions[:-1]:
        take, remaining = train_test_split(
            remaining, train_size=fraction / left, stratify=labels[remaining], random_state=seed
        )
        parts.append(np.sort(take))
        left -= fraction
    parts.append(np.sort(remaining))
    return parts


def train_val_split(
    labels: Sequence[int],
    val_fraction: float,
    seed: int,
    num_folds: int | None = None,
    fold: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) carved from one labelled pool.

    With `num_folds=k`, fold `fold` of a seeded stratified k-fold is the validation part, so a sweep
    over `data.fold=0,...,k-1` uses disjoint validation folds that together cover the pool.
    Otherwise a seeded stratified `val_fraction` is held out.
    """
    if num_folds is None:
        if not 0.0 < val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in (0, 1), got {val_fraction}")
        train, val = stratified_split(labels, [1.0 - val_fraction, val_fraction], seed)
        return train, val
    if num_folds < 2 or not 0 <= fold < num_folds:
        raise ConfigError(f"data.num_folds must be >= 2 and data.fold in [0, num_folds), got {num_folds}, {fold}")
    labels = np.asarray(labels)
    folds = StratifiedKFold(n_splits=num_folds, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels)
    train, val = list(folds)[fold]
    return np.sort(train), np.sort(val)
