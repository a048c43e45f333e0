"""Mixture-of-Features probes (MMVP's A-MoF and I-MoF), over two encoders' features of
the same images.

:class:`MixtureOfFeatures` is a scikit-learn transformer of ``X = [A | B]`` (the first
``width_a`` columns are encoder A's): each encoder's features are mapped to a common width
by a linear map fitted on the training rows only (each feature standardised, the narrower
encoder padded with zero features to the wider one's width), then

- ``additive``: ``alpha * A' + (1 - alpha) * B'``, one vector of the common width (the two
  encoders' features superposed: a linear read-out can no longer tell them apart);
- ``interleaved``: ``[A' | B']``, both kept side by side (what alternating the two token
  sequences gives a read-out of a position: each encoder's token is there).

``alpha = 1`` (or 0) leaves exactly the one encoder's standardised features (and zero
features), so the probe equals that encoder's own probe. :func:`mixture_scores` runs the
probe (:class:`probes.LinearProbe` after the mixture, a pipeline fitted fold by fold)
with folds grouped by image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data

from caches import CacheReader
from interp.errors import ConfigError
from probes.crossval import group_folds
from probes.linear import LinearProbe
from probes.selections import select
from probes.stats import bootstrap_ci, majority_chance, per_group_sums
from probes.sweep import site_labels

__all__ = [
    "ALPHAS",
    "MIXTURE_COLUMNS",
    "MIXTURE_MODES",
    "MixtureOfFeatures",
    "mixture_scores",
    "mixture_sweep",
    "nearest_tokens",
]

MIXTURE_MODES = ("additive", "interleaved")
ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)  # MMVP's weights of encoder A in the additive mixture


class MixtureOfFeatures(TransformerMixin, BaseEstimator):
    """Mix encoder A's features (the first ``width_a`` columns) with encoder B's (the
    rest): ``mode`` ``additive`` (weight ``alpha`` on A) or ``interleaved`` (both kept)."""

    def __init__(self, width_a: int = 1, alpha: float = 0.5, mode: str = "additive") -> None:
        self.width_a = width_a
        self.alpha = alpha
        self.mode = mode

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> MixtureOfFeatures:
        X = validate_data(self, X, dtype=np.float64)
        if self.mode not in MIXTURE_MODES:
            raise ConfigError(f"mode must be one of {MIXTURE_MODES}, got {self.mode!r}")
        if not 0 <= self.alpha <= 1:
            raise ConfigError(f"alpha must lie in [0, 1], got {self.alpha}")
        if not 0 < self.width_a < X.shape[1]:
            raise ConfigError(
                f"width_a must leave features to both encoders: 0 < {self.width_a} < "
                f"{X.shape[1]} columns"
            )
        self.scaler_a_ = StandardScaler().fit(X[:, : self.width_a])
        self.scaler_b_ = StandardScaler().fit(X[:, self.width_a :])
        self.width_ = max(self.width_a, X.shape[1] - self.width_a)  # the common width
        return self

    def _common(self, values: np.ndarray) -> np.ndarray:
        """``(n, d)`` standardised features padded with zero features to the common width."""
        out = np.zeros((len(values), self.width_))
        out[:, : values.shape[1]] = values
        return out

    def transform(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "width_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        a = self._common(self.scaler_a_.transform(X[:, : self.width_a]))  # (n, width)
        b = self._common(self.scaler_b_.transform(X[:, self.width_a :]))  # (n, width)
        if self.mode == "interleaved":
            return np.concatenate([a, b], axis=1)  # (n, 2 width)
        return self.alpha * a + (1 - self.alpha) * b  # (n, width)


def mixture_scores(
    a: np.ndarray,
    b: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    *,
    alphas: Sequence[float] = ALPHAS,
    modes: Sequence[str] = MIXTURE_MODES,
    n_splits: int = 5,
    Cs: float | Sequence[float] = (0.01, 0.1, 1.0),
    n_boot: int = 1000,
    seed: int = 0,
) -> list[dict]:
    """Held-out accuracy of a linear probe of ``labels`` ``(n,)`` (class indices) on each
    mixture of ``a`` ``(n, d_a)`` and ``b`` ``(n, d_b)`` (rows: samples; ``groups``: their
    images, which folds keep whole): one row per mode and alpha (``interleaved`` has no
    alpha: NaN) with ``accuracy``, a bootstrap interval over images, ``chance`` (the
    training folds' majority class) and ``n``. Every probe sees the same folds."""
    if len(a) != len(b) or len(a) != len(labels):
        raise ConfigError(
            f"a, b and labels need one row per sample: {len(a)}, {len(b)}, {len(labels)}"
        )
    unknown = [m for m in modes if m not in MIXTURE_MODES]
    if unknown:
        raise ConfigError(f"modes must be among {MIXTURE_MODES}, got {unknown}")
    folds = group_folds(groups, n_splits, seed)
    X = np.concatenate([a, b], axis=1)
    settings = [("additive", float(alpha)) for alpha in alphas if "additive" in modes]
    settings += [("interleaved", float("nan"))] if "interleaved" in modes else []
    rows = []
    for mode, alpha in settings:
        mixture = MixtureOfFeatures(a.shape[1], 0.5 if np.isnan(alpha) else alpha, mode)
        pipeline = make_pipeline(mixture, LinearProbe(Cs=Cs, random_state=seed))
        predicted = np.empty_like(labels)
        for fold in range(n_splits):
            train, test = folds != fold, folds == fold
            fitted = clone(pipeline).fit(X[train], labels[train])
            predicted[test] = fitted.predict(X[test])
        correct = predicted == labels
        sums, counts = per_group_sums(correct, groups)
        low, high = bootstrap_ci(sums, counts, n_boot=n_boot, seed=seed)
        rows.append(
            {
                "mode": mode,
                "alpha": alpha,
                "accuracy": float(correct.mean()),
                "ci_low": low,
                "ci_high": high,
                "chance": majority_chance(labels, folds),
                "n": len(labels),
            }
        )
    return rows


MIXTURE_COLUMNS = (
    "site_a",
    "site_b",
    "selection",
    "attribute",
    "mode",
    "alpha",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "chance",
    "n",
)
POOLED = ("mean", "on_object", "off_object")  # pooled within each encoder's own tokens
SELECTIONS = (*POOLED, "token")  # token: A's object tokens, B's nearest on its own grid


def mixture_sweep(
    cache_a: CacheReader,
    cache_b: CacheReader,
    site_a: str,
    site_b: str,
    *,
    attributes: Sequence[str] | None = None,
    selections: Sequence[str] = ("mean",),
    alphas: Sequence[float] = ALPHAS,
    modes: Sequence[str] = MIXTURE_MODES,
    n_splits: int = 5,
    Cs: float | Sequence[float] = (0.01, 0.1, 1.0),
    n_boot: int = 1000,
    seed: int = 0,
    tokens_per_image: int | None = 4,
) -> pd.DataFrame:
    """Mixture-of-Features probes of the categorical ``attributes`` (default: every one)
    on ``site_a`` of ``cache_a`` and ``site_b`` of ``cache_b``: two caches of the same
    images (each encoder's own). ``selections``: each image's tokens pooled within each
    encoder's own layout (:data:`POOLED`), or ``token``: up to ``tokens_per_image`` of
    A's tokens over the first object, each beside B's token whose patch centre is
    nearest (B's grid resampled onto A's). Columns :data:`MIXTURE_COLUMNS`."""
    differs = first_difference_of_data(cache_a, cache_b)
    if differs:
        raise ConfigError(differs)
    unknown = [s for s in selections if s not in SELECTIONS]
    if unknown:
        raise ConfigError(f"selections must be among {SELECTIONS}, got {unknown}")
    categorical = [a for a in cache_a.label_names if cache_a.label_classes(a) is not None]
    attributes = list(attributes) if attributes is not None else categorical
    wrong = [a for a in attributes if a not in categorical]
    if wrong:
        raise ConfigError(
            f"attributes {wrong} are not categorical labels; these are: {categorical}"
        )
    labels = {
        name: site_labels(reader, attributes, site)
        for name, reader, site in (("a", cache_a, site_a), ("b", cache_b, site_b))
    }
    tokens = {"a": cache_a.site_tokens(site_a), "b": cache_b.site_tokens(site_b)}
    rows = []
    for selection in selections:
        design = select(tokens["a"], labels["a"], selection, attributes, seed, tokens_per_image)
        if selection == "token":  # each of A's tokens beside B's token nearest to its patch
            rows_b = nearest_tokens(cache_a, site_a, cache_b, site_b, design.rows, design.groups)
            features_b = tokens["b"].values[rows_b]  # (m, d_b)
        else:
            features_b = select(tokens["b"], labels["b"], selection, attributes, seed).X
        for attribute in attributes:
            for row in mixture_scores(
                design.X,
                features_b,
                design.labels[attribute],
                design.groups,
                alphas=alphas,
                modes=modes,
                n_splits=n_splits,
                Cs=Cs,
                n_boot=n_boot,
                seed=seed,
            ):
                rows.append(
                    {
                        "site_a": site_a,
                        "site_b": site_b,
                        "selection": selection,
                        "attribute": attribute,
                        "mode": row["mode"],
                        "alpha": row["alpha"],
                        "metric": "accuracy",
                        "value": row["accuracy"],
                        "ci_low": row["ci_low"],
                        "ci_high": row["ci_high"],
                        "chance": row["chance"],
                        "n": row["n"],
                    }
                )
    return pd.DataFrame(rows, columns=list(MIXTURE_COLUMNS))


def nearest_tokens(
    cache_a: CacheReader,
    site_a: str,
    cache_b: CacheReader,
    site_b: str,
    rows: np.ndarray,
    images: np.ndarray,
) -> np.ndarray:
    """For tokens ``rows`` of ``site_a`` (flat rows; of ``images``), the flat row of the
    token of ``site_b`` in the same image whose patch centre (in the image's pixels) is
    nearest: the patch grid of B resampled onto A's (nearest neighbour)."""
    offsets_a, offsets_b = cache_a.offsets(site_a), cache_b.offsets(site_b)
    out = np.empty(len(rows), dtype=np.int64)
    centres: dict[tuple[str, int], np.ndarray] = {}  # (tokens, 2), per cache and image

    def of(key: str, reader: CacheReader, site: str, image: int) -> np.ndarray:
        name = (key, image if reader.is_ragged(site) else -1)  # a dense site: one layout
        if name not in centres:
            centres[name] = _centres(reader.layout(site, image=image).boxes)
        return centres[name]

    for k, (row, image) in enumerate(zip(rows.tolist(), images.tolist(), strict=True)):
        centres_b = of("b", cache_b, site_b, image)  # (tokens_b, 2)
        centre = of("a", cache_a, site_a, image)[row - offsets_a[image]]  # (2,)
        nearest = int(np.argmin(((centres_b - centre) ** 2).sum(1)))
        out[k] = offsets_b[image] + nearest
    return out


def _centres(boxes: np.ndarray) -> np.ndarray:
    """``(tokens, 2)`` centre (y, x) of each ``(y0, x0, y1, x1)`` box."""
    return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)


def first_difference_of_data(cache_a: CacheReader, cache_b: CacheReader) -> str | None:
    """Why two caches do not hold the same images (a message), or None."""
    data_a, data_b = cache_a.attrs.get("data"), cache_b.attrs.get("data")
    if cache_a.n_written != cache_b.n_written or data_a != data_b:
        return (
            f"{cache_a.path} and {cache_b.path} must hold the same images (extract both "
            f"encoders on the same data): {cache_a.n_written} and {cache_b.n_written} images "
            f"from {short(data_a)} and {short(data_b)}"
        )
    return None


def short(value: object, most: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= most else text[: most - 3] + "..."
