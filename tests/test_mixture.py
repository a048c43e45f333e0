"""Mixture-of-Features probes: the mixtures by hand, and alpha's endpoints equal to each
encoder's own probe."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from interp import ConfigError
from probes import LinearProbe
from probes.crossval import group_folds
from probes.mixture import MixtureOfFeatures, mixture_scores


@pytest.fixture
def encoders(rng):
    """60 images, 2 samples each: A (5 features) carries the label, B (8) only weakly."""
    labels = np.repeat(rng.integers(0, 3, size=60), 2)  # (120,)
    groups = np.repeat(np.arange(60), 2)
    a = rng.normal(size=(120, 5)) + 1.5 * np.eye(5)[labels]
    b = rng.normal(size=(120, 8)) * 3 + 0.3 * np.eye(8)[labels]
    return a, b, labels, groups


def test_mixtures_by_hand(encoders) -> None:
    a, b, _, _ = encoders
    train, test = slice(0, 80), slice(80, None)
    X = np.concatenate([a, b], axis=1)
    mix = MixtureOfFeatures(width_a=5, alpha=0.25).fit(X[train])
    std_a = (a[test] - a[train].mean(0)) / a[train].std(0)  # the training rows' statistics
    std_b = (b[test] - b[train].mean(0)) / b[train].std(0)
    padded_a = np.concatenate([std_a, np.zeros((40, 3))], axis=1)  # to B's width, 8
    np.testing.assert_allclose(mix.transform(X[test]), 0.25 * padded_a + 0.75 * std_b)
    both = MixtureOfFeatures(width_a=5, mode="interleaved").fit(X[train]).transform(X[test])
    np.testing.assert_allclose(both, np.concatenate([padded_a, std_b], axis=1))
    with pytest.raises(ValueError, match="alpha must lie in"):
        MixtureOfFeatures(width_a=5, alpha=2).fit(X)
    with pytest.raises(ValueError, match="width_a must leave features to both"):
        MixtureOfFeatures(width_a=13).fit(X)


def _own_probe(features, labels, groups, seed=0):
    folds = group_folds(groups, 5, seed)
    predicted = np.empty_like(labels)
    for fold in range(5):
        train, test = folds != fold, folds == fold
        probe = LinearProbe(Cs=(0.01, 0.1, 1.0), random_state=seed).fit(
            features[train], labels[train]
        )
        predicted[test] = probe.predict(features[test])
    return (predicted == labels).mean()


def test_alpha_endpoints_are_each_encoders_own_probe(encoders) -> None:
    a, b, labels, groups = encoders
    rows = mixture_scores(a, b, labels, groups, n_boot=100)
    by = {(r["mode"], r["alpha"]): r for r in rows if r["mode"] == "additive"}
    assert by[("additive", 1.0)]["accuracy"] == _own_probe(a, labels, groups)
    assert by[("additive", 0.0)]["accuracy"] == _own_probe(b, labels, groups)
    assert by[("additive", 1.0)]["accuracy"] > by[("additive", 0.0)]["accuracy"] + 0.2
    interleaved = next(r for r in rows if r["mode"] == "interleaved")
    assert np.isnan(interleaved["alpha"])  # side by side, nothing is superposed:
    assert interleaved["accuracy"] > by[("additive", 0.5)]["accuracy"]
    assert all(r["ci_low"] <= r["accuracy"] <= r["ci_high"] for r in rows)
    with pytest.raises(ConfigError, match="modes must be among"):
        mixture_scores(a, b, labels, groups, modes=["concat"])


def test_interp_mof_over_two_encoders_caches(loaded, tmp_path, capsys) -> None:
    """The organism's CLIP tower and a tiny DINOv2 extracted on the same stimuli: one row
    per selection, attribute, mode and alpha; caches of other images are refused."""
    import torch
    from tiny_vlms import build_encoder

    from analyses.cli import main
    from caches import extract
    from interp import StimulusSpec, generate, load_model

    data = generate(StimulusSpec(n_images=30, seed=5))
    first = extract(loaded, data, tmp_path / "a.h5", sites="vision.1", conditions="baseline",
                    progress=False)  # fmt: skip
    torch.manual_seed(0)
    dino = load_model(build_encoder("dinov2", tmp_path / "dino"))
    second = extract(dino, data, tmp_path / "b.h5", progress=False)
    out = tmp_path / "mof"
    args = ["mof", str(first), str(second), "--attributes", "color", "shape", "--n-splits", "3",
            "--n-boot", "20", "--alphas", "0", "0.5", "1", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    table = pd.read_csv(out / "mof.csv")
    assert len(table) == 2 * (3 + 1)  # two attributes x (three alphas + interleaved)
    assert set(table.site_a) == {"vision.1"} and set(table.site_b) == {"vision.1"}
    assert table.value.between(0, 1).all() and (out / "mixture_of_features.html").is_file()
    assert "interleaved" in capsys.readouterr().out
    other = extract(dino, generate(StimulusSpec(n_images=30, seed=6)), tmp_path / "c.h5",
                    progress=False)  # fmt: skip
    assert main(["mof", str(first), str(other), "--out", str(tmp_path / "x")]) == 2
    assert "must hold the same images" in capsys.readouterr().err


def test_token_mixtures_resample_b_onto_a(loaded, tmp_path) -> None:
    """The organism's 8x8 grid of 8 px patches against a DINOv2's 4x4 grid over the same
    64 px images (16 px each): A's token (r, c) sits in B's token (r // 2, c // 2)."""
    import torch
    from tiny_vlms import build_encoder

    from caches import CacheReader, extract
    from interp import StimulusSpec, generate, load_model
    from probes.mixture import mixture_sweep, nearest_tokens

    data = generate(StimulusSpec(n_images=20, seed=5))
    first = extract(loaded, data, tmp_path / "a.h5", sites="vision.1", conditions="baseline",
                    progress=False)  # fmt: skip
    torch.manual_seed(0)
    dino = load_model(build_encoder("dinov2", tmp_path / "dino"))
    second = extract(dino, data, tmp_path / "b.h5", progress=False)
    with CacheReader(first) as a, CacheReader(second) as b:
        grid_a, grid_b = a.layout("vision.1").grid, b.layout("vision.1").grid  # (64, 2), (16, 2)
        assert grid_a.max() == 7 and grid_b.max() == 3
        rows = np.array([0, 9, 63, 64 + 18])  # image 0's tokens 0, 9, 63; image 1's 18
        images = np.array([0, 0, 0, 1])
        got = nearest_tokens(a, "vision.1", b, "vision.1", rows, images)
        local = rows - 64 * images
        expected = [(r // 2) * 4 + c // 2 for r, c in grid_a[local]]
        assert got.tolist() == [16 * i + e for i, e in zip(images, expected, strict=True)]
        table = mixture_sweep(
            a, b, "vision.1", "vision.1", attributes=["color"], selections=["token"],
            alphas=[0, 1], n_splits=3, n_boot=10,
        )  # fmt: skip
    assert len(table) == 3 and set(table.selection) == {"token"}
