"""Penultimate-layer features: a 2-D projection to look at, and a silhouette score to compare.

The studies judged "which depth clusters the classes best" by eye on a 2-D plot; the silhouette of
the true classes in the full feature space turns that into a number (in [-1, 1], higher is better).
"""

from __future__ import annotations

import logging

import numpy as np

from lightning_resnet.errors import ConfigError

log = logging.getLogger(__name__)

PROJECTIONS = ("pca", "tsne")


def project_2d(features: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """(N, D) features -> (N, 2) points by PCA or t-SNE."""
    if method not in PROJECTIONS:
        raise ConfigError(f"callbacks.reports.embedding={method!r}; valid: {', '.join(PROJECTIONS)}")
    if len(features) < 3:
        return np.zeros((len(features), 2))
    if method == "pca":
        from sklearn.decomposition import PCA  # here, not at import: the report's, at the end of a run

        return PCA(n_components=2, random_state=seed).fit_transform(features)
    from sklearn.manifold import TSNE

    perplexity = min(30.0, (len(features) - 1) / 3)
    return TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(features)


def silhouette(features: np.ndarray, labels: np.ndarray, max_points: int = 5000, seed: int = 0) -> float | None:
    """Silhouette of the true classes in feature space (Euclidean); None when it is undefined."""
    num_labels = len(np.unique(labels))
    if not 2 <= num_labels < len(labels):
        log.warning("silhouette needs 2 <= classes < samples; got %d classes, %d samples", num_labels, len(labels))
        return None
    from sklearn.metrics import silhouette_score

    sample_size = min(len(labels), max_points)
    return float(silhouette_score(features, labels, sample_size=sample_size, random_state=seed))


def subsample(num: int, max_points: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most `max_points` of `num` items, a seeded random choice when capped."""
    if num <= max_points:
        return np.arange(num)
    return np.sort(np.random.default_rng(seed).choice(num, size=max_points, replace=False))
