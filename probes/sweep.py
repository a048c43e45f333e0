"""Probe every (site, attribute, condition) of a cache into one tidy table."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold
from tqdm.auto import tqdm

from caches import CacheReader
from interp.errors import ConfigError
from interp.sites import sort_sites
from probes.linear import LinearProbe

__all__ = ["TABLE_COLUMNS", "cross_validate_probe", "sweep"]

TABLE_COLUMNS = ["site", "depth", "attribute", "condition", "accuracy", "chance", "n"]


def cross_validate_probe(
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    *,
    n_splits: int = 5,
    seed: int = 0,
    C: float = 1.0,
) -> tuple[float, float]:
    """Accuracy of :class:`LinearProbe` and of the majority class, over folds grouped by image.

    Samples sharing a group (an image) are never split between train and test. The chance
    level is the held-out accuracy of predicting each training fold's majority class.
    """
    if len(np.unique(groups)) < n_splits:
        raise ConfigError(
            f"{len(np.unique(groups))} images cannot make {n_splits} folds; use more images "
            f"or fewer folds"
        )
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    correct = chance = 0
    for train, test in folds.split(X, y, groups):
        probe = LinearProbe(C=C).fit(X[train], y[train])
        correct += int((probe.predict(X[test]) == y[test]).sum())
        values, counts = np.unique(y[train], return_counts=True)
        chance += int((y[test] == values[counts.argmax()]).sum())
    return correct / len(y), chance / len(y)


def sweep(
    reader: CacheReader,
    *,
    sites: Sequence[str] | None = None,
    attributes: Sequence[str] | None = None,
    conditions: Sequence[str] | None = None,
    n_splits: int = 5,
    seed: int = 0,
    C: float = 1.0,
    progress: bool = True,
) -> pd.DataFrame:
    """Mean-pooled probes for each site x categorical attribute x condition.

    Reads one site of one condition at a time. Returns the columns of
    :data:`TABLE_COLUMNS`; ``depth`` is the site's index in forward-pass order.
    """
    all_sites = sort_sites(reader.sites)
    sites = sort_sites(list(sites)) if sites else all_sites
    categorical = [a for a in reader.label_names if reader.label_classes(a) is not None]
    attributes = list(attributes) if attributes else categorical
    for attribute in attributes:
        if attribute not in categorical:
            raise ConfigError(
                f"attribute {attribute!r} is not a categorical label of this cache; "
                f"choose from {categorical}"
            )
    conditions = list(conditions) if conditions else reader.conditions
    n = reader.n_written
    groups = np.arange(n)  # one sample per image when mean-pooled
    labels = {a: reader.labels(a)[:n] for a in attributes}
    rows = []
    jobs = [(c, s) for c in conditions for s in sites]
    for condition, site in tqdm(jobs, desc="probing", unit="site", disable=not progress):
        features = reader.mean_pooled(site, condition)  # (n, d)
        for attribute in attributes:
            accuracy, chance = cross_validate_probe(
                features, labels[attribute], groups, n_splits=n_splits, seed=seed, C=C
            )
            rows.append(
                {
                    "site": site,
                    "depth": all_sites.index(site),
                    "attribute": attribute,
                    "condition": condition,
                    "accuracy": accuracy,
                    "chance": chance,
                    "n": n,
                }
            )
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)
