"""Controls and uncertainty for probe results: control labels, chance, bootstrap CIs."""

from __future__ import annotations

import numpy as np

__all__ = ["control_labels", "majority_chance", "bootstrap_ci", "per_group_sums"]


def control_labels(labels: np.ndarray, units: np.ndarray, seed: int) -> np.ndarray:
    """Hewitt & Liang's control task: each unit keeps one label, taken from another unit.

    ``units`` ``(n,)`` names what must share a label (an image, or one object of one
    image): the units' labels are permuted among them, so the class frequencies stay and
    every row of a unit gets the same control label, while its relation to the features
    is gone. Returns ``(n,)``.
    """
    unique, first, inverse = np.unique(units, return_index=True, return_inverse=True)
    permuted = labels[first][np.random.default_rng(seed).permutation(len(unique))]
    return permuted[inverse]


def majority_chance(labels: np.ndarray, folds: np.ndarray) -> float:
    """Held-out accuracy of always answering the training folds' most frequent class."""
    hits = 0
    for f in np.unique(folds):
        train, test = labels[folds != f], labels[folds == f]
        values, counts = np.unique(train, return_counts=True)
        hits += int((test == values[counts.argmax()]).sum())
    return hits / len(labels)


def per_group_sums(values: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum and count of ``values`` per group (image), in the order of ``np.unique``."""
    _, inverse = np.unique(groups, return_inverse=True)
    sums = np.bincount(inverse, weights=values.astype(np.float64))
    counts = np.bincount(inverse).astype(np.float64)
    return sums, counts


def bootstrap_ci(
    sums: np.ndarray,
    counts: np.ndarray,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``sum(sums) / sum(counts)``, resampling groups.

    ``sums`` and ``counts`` are per image (e.g. correct predictions and predictions), so
    the unit of resampling is the image, not the token: tokens of one image are not
    independent evidence.
    """
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(sums), size=(n_boot, len(sums)))  # (n_boot, groups)
    stats = sums[draws].sum(1) / np.maximum(counts[draws].sum(1), 1)
    tail = (1 - level) / 2
    low, high = np.quantile(stats, [tail, 1 - tail])
    return float(low), float(high)
