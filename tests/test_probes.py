from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from caches import CacheReader, extract
from interp import ConfigError, StimulusSpec, generate
from probes import TABLE_COLUMNS, LinearProbe, cross_validate_probe, sweep


def test_probe_follows_the_estimator_contract(rng) -> None:
    X = rng.normal(size=(120, 6))
    y = (X[:, 0] + 0.3 * rng.normal(size=120) > 0).astype(int)
    probe = LinearProbe(C=0.5)
    assert probe.get_params() == {"C": 0.5, "max_iter": 2000}
    assert probe.fit(X, y) is probe
    assert {"coef_", "intercept_", "classes_", "scaler_"} <= set(vars(probe))
    assert not hasattr(clone(probe), "coef_")
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=2000)).fit(X, y)
    np.testing.assert_array_equal(probe.predict(X), reference.predict(X))
    np.testing.assert_allclose(probe.predict_proba(X), reference.predict_proba(X), rtol=1e-6)
    with pytest.raises(ValueError):
        probe.predict(X[:, :3])


def test_planted_signal_is_found_and_shuffled_labels_fall_to_chance(rng) -> None:
    n, d = 300, 20
    y = rng.integers(0, 4, size=n)
    X = rng.normal(size=(n, d))
    X[np.arange(n), y] += 3.0  # the label is written along four axes
    accuracy, chance = cross_validate_probe(X, y, np.arange(n))
    assert accuracy > 0.9 and chance < 0.35
    shuffled, chance = cross_validate_probe(X, rng.permutation(y), np.arange(n))
    assert shuffled < chance + 0.1


def test_folds_are_grouped_by_image(rng) -> None:
    """Ten identical copies of each image with a random label: memorising copies would
    score ~1 if one image's copies fell on both sides of a fold."""
    n_images, copies = 60, 10
    features = rng.normal(size=(n_images, 40))
    labels = rng.integers(0, 2, size=n_images)
    X = np.repeat(features, copies, axis=0) + 1e-3 * rng.normal(size=(n_images * copies, 40))
    y = np.repeat(labels, copies)
    groups = np.repeat(np.arange(n_images), copies)
    grouped, chance = cross_validate_probe(X, y, groups, C=100.0)
    assert grouped < 0.7
    leaky, _ = cross_validate_probe(X, y, np.arange(len(y)), C=100.0)
    assert leaky > 0.95  # the same probe without grouping is fooled
    with pytest.raises(ConfigError, match="cannot make 5 folds"):
        cross_validate_probe(X[:30], y[:30], groups[:30] % 3)


def test_color_is_decodable_from_the_first_vision_layer(loaded, tmp_path) -> None:
    stimuli = generate(StimulusSpec(n_images=240, seed=21))
    path = extract(
        loaded,
        stimuli,
        tmp_path / "c.h5",
        sites=["vision.0", "lm.7"],
        conditions=["baseline"],
        progress=False,
    )
    with CacheReader(path) as reader:
        table = sweep(reader, attributes=["color", "count"], progress=False)
    assert list(table.columns) == TABLE_COLUMNS
    assert set(table["condition"]) == {"baseline"} and (table["n"] == 240).all()
    row = table[(table.site == "vision.0") & (table.attribute == "color")].iloc[0]
    assert row.depth == 0 and 0.1 < row.chance < 0.25  # seven colors
    assert row.accuracy > row.chance + 0.15, row
    with CacheReader(path) as reader, pytest.raises(ConfigError, match="categorical"):
        sweep(reader, attributes=["x"], progress=False)
