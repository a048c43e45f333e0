"""Sparse features against the attributes: for every feature of an SAE, how well its
activation on a token separates each class of the object under that token (AUROC among
the tokens over objects, and precision at its top activations), from the token layouts'
per-token labels; and, per attribute, how many features are specific to it.

- ``auroc``: the probability that the feature is more active on a token over an object of
  the class than on a token over an object of another class (ties count half), computed
  from ranks (Mann-Whitney);
- ``precision``: among the feature's ``n_class`` most active tokens over objects
  (``n_class``: the tokens of the class), the share over an object of the class;
- ``frequency``: the share of all the site's tokens (background included) on which the
  feature fires.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from caches.reader import CacheReader
from interp.errors import ConfigError
from interp.models.sae import SparseAutoencoder
from probes.sae_training import encoded_blocks
from probes.sweep import site_labels

__all__ = ["FEATURE_COLUMNS", "SPECIFIC_AUROC", "feature_table", "specific_counts"]

FEATURE_COLUMNS = (
    "site", "sae", "feature", "frequency", "attribute", "class", "auroc", "precision", "n_class",
)  # fmt: skip
# A feature is specific to an attribute where its best class there reaches this AUROC.
SPECIFIC_AUROC = 0.9


def _token_classes(
    reader: CacheReader, site: str, images: range, attributes: list[str]
) -> dict[str, np.ndarray]:
    """Per attribute, ``(tokens,)`` the class of the object under each token of
    ``images`` (-1: background or padding); the objects under the tokens found once."""
    labels = site_labels(reader, [], site)
    offsets = reader.offsets(site)
    rows = slice(int(offsets[images.start]), int(offsets[images.stop]))
    objects = labels.token_objects[rows].astype(np.int64)
    image = np.repeat(
        np.arange(images.start, images.stop), np.diff(offsets[images.start : images.stop + 1])
    )
    under = np.clip(objects, 0, None)
    return {a: np.where(objects >= 0, labels.objects[a][image, under], -1) for a in attributes}


def feature_table(
    sae: SparseAutoencoder,
    reader: CacheReader,
    site: str,
    *,
    name: str = "sae",
    condition: str = "baseline",
    images: range | None = None,
    attributes: list[str] | None = None,
) -> pd.DataFrame:
    """One row per feature and attribute: the feature's best class of that attribute by
    AUROC, with its precision at the top activations, and the feature's frequency
    (:data:`FEATURE_COLUMNS`). ``images``: default the SAE's held-out images where its
    metadata names them, else every written image; ``attributes``: default every
    per-object attribute of the cache."""
    if images is None:
        held = sae.metadata.get("held_out_images")
        images = range(*held) if held else range(reader.n_written)
    known = reader.object_label_names
    attributes = list(attributes or known)
    unknown = [a for a in attributes if a not in known]
    if unknown:
        raise ConfigError(
            f"attributes {unknown} are no per-object labels of the cache; its per-object "
            f"labels: {', '.join(known) or 'none'}"
        )
    encoded = encoded_blocks(sae, reader, site, condition, images)
    features = np.concatenate([f.numpy() for _, f in encoded])  # (tokens, d_sae)
    frequency = (features > 0).mean(0)
    rows = []
    for attribute, classes in _token_classes(reader, site, images, attributes).items():
        on = classes >= 0
        if len(np.unique(classes[on])) < 2:
            continue  # one class over objects: nothing to separate
        acts, labels = features[on], classes[on]
        ranks = rankdata(acts, axis=0)  # (tokens on objects, d_sae), ties averaged
        order = np.argsort(-acts, axis=0, kind="stable")
        best = np.full(acts.shape[1], -np.inf)
        best_class = np.zeros(acts.shape[1], dtype=np.int64)
        for c in np.unique(labels):
            positive = labels == c
            n_pos, n_neg = int(positive.sum()), int((~positive).sum())
            auroc = (ranks[positive].sum(0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
            better = auroc > best
            best, best_class = np.where(better, auroc, best), np.where(better, c, best_class)
        names = reader.label_classes(attribute) or []
        for j in range(acts.shape[1]):
            c = best_class[j]
            n_class = int((labels == c).sum())
            top = order[:n_class, j]
            rows.append(
                {
                    "site": site,
                    "sae": name,
                    "feature": j,
                    "frequency": float(frequency[j]),
                    "attribute": attribute,
                    "class": names[c] if c < len(names) else str(c),
                    "auroc": float(best[j]),
                    "precision": float((labels[top] == c).mean()),
                    "n_class": n_class,
                }
            )
    return pd.DataFrame(rows, columns=list(FEATURE_COLUMNS))


def specific_counts(table: pd.DataFrame, threshold: float = SPECIFIC_AUROC) -> pd.DataFrame:
    """Per site, SAE and attribute: how many features are specific to it (best-class
    AUROC >= ``threshold``, among features that fire at all) and how many classes those
    features cover."""
    fired = table[table.frequency > 0]
    specific = fired[fired.auroc >= threshold]
    counts = (
        specific.groupby(["site", "sae", "attribute"])
        .agg(specific_features=("feature", "nunique"), classes_covered=("class", "nunique"))
        .reindex(fired.groupby(["site", "sae", "attribute"]).size().index, fill_value=0)
        .reset_index()
    )
    return counts
