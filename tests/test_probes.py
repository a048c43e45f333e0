"""Probes: the estimator contract, agreement with scikit-learn, controls, confidence
intervals, token selections, and the sweep over a real cache."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_estimator

from caches import CacheReader, SiteTokens, extract
from interp import CacheError, ConfigError, StimulusSpec, generate
from probes import (
    TABLE_COLUMNS,
    LinearProbe,
    ProbeSettings,
    RidgeProbe,
    sklearn_backend,
    sweep,
    torch_backend,
)
from probes.crossval import group_folds, nested_logistic
from probes.selections import Design, SiteLabels, select
from probes.solver import fit_logistic, predict_logistic
from probes.stats import bootstrap_ci, control_labels, majority_chance, per_group_sums
from probes.sweep import probe_design, probe_designs, site_labels


@pytest.mark.parametrize("estimator", [LinearProbe(), RidgeProbe()], ids=lambda e: type(e).__name__)
def test_probes_pass_scikit_learns_estimator_checks(estimator) -> None:
    failed = [
        (r["check_name"], str(r["exception"])[:200])
        for r in check_estimator(estimator, on_fail=None)
        if r["status"] == "failed"
    ]
    assert failed == []


def test_linear_probe_equals_scikit_learn_at_a_fixed_C(rng) -> None:
    X = rng.normal(size=(150, 6))
    y = np.digitize(X[:, 0] + 0.5 * X[:, 1] + 0.3 * rng.normal(size=150), [-0.5, 0.5])
    for labels in (y, (y > 0).astype(int)):  # three classes, then two
        probe = LinearProbe(Cs=0.5)
        assert probe.fit(X, labels) is probe
        assert {"coef_", "intercept_", "classes_", "scaler_", "C_"} <= set(vars(probe))
        assert not hasattr(clone(probe), "coef_")
        reference = make_pipeline(
            StandardScaler(), LogisticRegression(C=0.5, tol=1e-10, max_iter=10_000)
        ).fit(X, labels)
        np.testing.assert_array_equal(probe.predict(X), reference.predict(X))
        np.testing.assert_allclose(probe.predict_proba(X), reference.predict_proba(X), atol=2e-3)
        assert probe.coef_.shape == reference[-1].coef_.shape
    with pytest.raises(ValueError):
        probe.predict(X[:, :3])


def test_inner_cross_validation_scores_each_penalty_and_keeps_the_best(rng) -> None:
    X = rng.normal(size=(90, 40))
    noise = LinearProbe(Cs=(100.0, 0.001)).fit(X, rng.integers(0, 2, size=90))
    signal = LinearProbe(Cs=(100.0, 0.001)).fit(X, (X[:, 0] > 0).astype(int))
    for probe in (noise, signal):
        assert probe.cv_scores_.shape == (2,)  # one inner accuracy per penalty (sorted)
        grid = (0.001, 100.0)
        assert grid[int(probe.cv_scores_.argmax())] == probe.C_
    assert signal.cv_scores_.max() > 0.8 and noise.cv_scores_.max() < 0.72


def test_ridge_probe_equals_scikit_learn(rng) -> None:
    X = rng.normal(size=(80, 5))
    Y = X @ rng.normal(size=(5, 3)) + 0.1 * rng.normal(size=(80, 3))
    probe = RidgeProbe(alphas=2.0).fit(X, Y)
    reference = make_pipeline(StandardScaler(), Ridge(alpha=2.0)).fit(X, Y)
    np.testing.assert_allclose(probe.predict(X), reference.predict(X), rtol=1e-6, atol=1e-8)
    chosen = RidgeProbe().fit(X, Y[:, 0])
    assert chosen.coef_.shape == (5,) and chosen.alpha_ in chosen.alphas


def test_batched_solver_equals_separate_scikit_learn_fits(rng) -> None:
    """Many problems (labels x training rows x penalties) in one call give each one's own
    scikit-learn solution: the batch does not couple them."""
    n, d = 160, 12
    X = rng.normal(size=(n, d)).astype(np.float32)
    labels = [np.digitize(X[:, 0] + rng.normal(size=n), [-1, 0, 1]), (X[:, 1] > 0).astype(int)]
    problems = [(a, f, C) for a in range(2) for f in range(3) for C in (0.05, 1.0)]
    y = np.stack([labels[a] for a, _, _ in problems])
    train = np.stack([np.arange(n) % 3 != f for _, f, _ in problems])
    solution = fit_logistic(
        torch.from_numpy(X),
        torch.from_numpy(y),
        torch.from_numpy(train),
        torch.tensor([C for _, _, C in problems]),
        4,
    )
    predicted = predict_logistic(solution, torch.from_numpy(X)).numpy()
    for p, (a, _, C) in enumerate(problems):
        reference = LogisticRegression(C=C, tol=1e-8, max_iter=5000).fit(
            X[train[p]], labels[a][train[p]]
        )
        assert (predicted[p] == reference.predict(X)).mean() >= 0.99, problems[p]
        coef = solution.coef[p].numpy()[:, : len(reference.classes_)]
        if len(reference.classes_) == 2:
            coef = coef[:, 1:] - coef[:, :1]
        np.testing.assert_allclose(coef.T, reference.coef_, atol=0.02)


def test_nested_cross_validation_agrees_with_the_scikit_learn_backend(rng) -> None:
    n, d = 200, 16
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = np.stack([np.digitize(X[:, k] + 0.7 * rng.normal(size=n), [-0.5, 0.5]) for k in (0, 1)])
    groups = np.arange(n)
    folds = group_folds(groups, 5, 0)
    fast = nested_logistic(X, y, folds, groups, (0.01, 0.1, 1.0), backend=torch_backend())
    slow = nested_logistic(X, y, folds, groups, (0.01, 0.1, 1.0), backend=sklearn_backend())
    np.testing.assert_array_equal(fast.chosen_C, slow.chosen_C)
    for k in range(2):
        assert abs((fast.predicted[k] == y[k]).mean() - (slow.predicted[k] == y[k]).mean()) <= 0.01


def test_a_capped_working_set_solves_in_chunks_to_the_same_answers(rng) -> None:
    X = rng.normal(size=(120, 10)).astype(np.float32)
    y = np.stack([np.digitize(X[:, k] + rng.normal(size=120), [-0.5, 0.5]) for k in range(5)])
    train = rng.random(y.shape) < 0.7
    C = np.array([0.1, 1.0, 0.1, 1.0, 10.0])
    whole = torch_backend(dtype=torch.float64, tol=1e-8)(X, y, train, C, 3)
    one_at_a_time = torch_backend(dtype=torch.float64, tol=1e-8, max_bytes=1)(X, y, train, C, 3)
    np.testing.assert_array_equal(whole, one_at_a_time)
    assert whole.shape == y.shape and (whole != y).any()  # real fits, not the labels


def _planted(rng, n_images: int = 240, copies: int = 1, strength: float = 3.0) -> Design:
    """Images with a 4-class label written along four feature axes (``copies`` samples
    per image, as tokens), and a second label that is pure noise."""
    y = rng.integers(0, 4, size=n_images)
    noise = rng.integers(0, 3, size=n_images)
    groups = np.repeat(np.arange(n_images), copies)
    X = rng.normal(size=(n_images * copies, 20))
    X[np.arange(len(X)), y[groups]] += strength
    return Design(
        X=X.astype(np.float32),
        groups=groups,
        labels={"planted": y[groups], "noise": noise[groups]},
        units={"planted": groups, "noise": groups},
    )


def test_planted_signal_is_found_and_its_control_falls_to_chance(rng) -> None:
    design = _planted(rng)
    folds = group_folds(np.arange(240), 5, 0)
    rows = {
        r["attribute"]: r
        for r in probe_design(design, ["planted", "noise"], folds, ProbeSettings())
    }
    planted, noise = rows["planted"], rows["noise"]
    assert planted["value"] > 0.9 and planted["ci_low"] < planted["value"] < planted["ci_high"]
    assert planted["control"] < planted["chance"] + 0.1  # shuffled per image: nothing left
    assert planted["selectivity"] > 0.6
    assert noise["value"] < noise["chance"] + 0.1 and abs(noise["selectivity"]) < 0.15


def test_folds_are_grouped_by_image(rng) -> None:
    """Ten near-copies of each image with a random label: memorising copies would score
    ~1 if one image's copies fell on both sides of a fold."""
    n_images, copies = 60, 10
    features = rng.normal(size=(n_images, 40))
    labels = rng.integers(0, 2, size=n_images)
    X = (np.repeat(features, copies, axis=0) + 1e-3 * rng.normal(size=(600, 40))).astype(np.float32)
    y = np.repeat(labels, copies)[None]
    groups = np.repeat(np.arange(n_images), copies)
    grouped = nested_logistic(X, y, group_folds(groups, 5, 0), groups, (100.0,))
    assert (grouped.predicted[0] == y[0]).mean() < 0.7
    rows = np.arange(600)
    leaky = nested_logistic(X, y, group_folds(rows, 5, 0), rows, (100.0,))
    assert (leaky.predicted[0] == y[0]).mean() > 0.95  # the same probe without grouping
    with pytest.raises(ConfigError, match="cannot make 5 folds"):
        group_folds(groups[:30] % 3, 5, 0)


def test_confidence_intervals_cover_the_truth_at_the_stated_rate() -> None:
    """Per-image correctness with a known accuracy of 0.8 (and 1-6 tokens per image):
    the 95% interval must contain 0.8 in about 95% of repeated experiments."""
    rng = np.random.default_rng(0)
    covered = 0
    trials = 300
    for trial in range(trials):
        counts = rng.integers(1, 7, size=150).astype(float)
        sums = rng.binomial(counts.astype(int), 0.8).astype(float)
        low, high = bootstrap_ci(sums, counts, n_boot=400, seed=trial)
        covered += low <= 0.8 <= high
    assert 0.91 <= covered / trials <= 0.98


def test_control_labels_are_one_per_unit_and_keep_the_class_frequencies(rng) -> None:
    units = np.repeat(np.arange(50), 4)
    labels = np.repeat(rng.integers(0, 5, size=50), 4)
    control = control_labels(labels, units, seed=1)
    assert all(len(set(control[units == u])) == 1 for u in range(50))
    np.testing.assert_array_equal(np.sort(control), np.sort(labels))
    assert (control != labels).any()
    sums, counts = per_group_sums(np.ones(200), units)
    np.testing.assert_array_equal(counts, 4)
    assert majority_chance(np.array([0, 0, 0, 1] * 5), np.arange(20) % 5) == 0.75


def _site_labels() -> SiteLabels:
    # Two images, four tokens: image 0 has object 0 on tokens 0-1 and object 1 on token 3.
    return SiteLabels(
        image={"color": np.array([2, 5]), "count": np.array([1, 0])},
        objects={"color": np.array([[2, 6], [5, -1]])},
        token_objects=np.array([[0, 0, -1, 1], [-1, 0, -1, -1]], dtype=np.int8),
    )


def test_token_selections_pick_the_right_tokens_and_labels() -> None:
    acts = np.arange(2 * 4 * 3, dtype=np.float32).reshape(2, 4, 3)
    labels = _site_labels()
    tokens = SiteTokens.from_dense(acts)
    mean = select(tokens, labels, "mean", ["color", "count"])
    np.testing.assert_allclose(mean.X, acts.mean(1))
    on = select(tokens, labels, "on_object", ["color"])
    np.testing.assert_allclose(on.X, [acts[0, :2].mean(0), acts[1, 1]])
    off = select(tokens, labels, "off_object", ["color"])
    np.testing.assert_allclose(off.X, [acts[0, 2], acts[1, [0, 2, 3]].mean(0)])
    token = select(tokens, labels, "token", ["color", "count"])
    np.testing.assert_allclose(token.X, acts[[0, 0, 0, 1], [0, 1, 3, 1]])
    np.testing.assert_array_equal(token.labels["color"], [2, 2, 6, 5])  # each token's object
    np.testing.assert_array_equal(token.labels["count"], [1, 1, 1, 0])  # the image's count
    np.testing.assert_array_equal(token.groups, [0, 0, 0, 1])
    assert len(set(token.units["color"])) == 3  # two objects of image 0, one of image 1
    capped = select(tokens, labels, "token", ["color"], tokens_per_image=1)
    assert list(capped.groups) == [0, 1]
    one = select(tokens, labels, "random_1", ["color"])
    assert all(any(np.allclose(one.X[i], t) for t in acts[i]) for i in range(2))
    np.testing.assert_allclose(select(tokens, labels, "random_4", ["color"]).X, mean.X)
    with pytest.raises(ConfigError, match="unknown token selection"):
        select(tokens, labels, "corners", ["color"])
    with pytest.raises(ConfigError, match="1 <= k <= 4"):
        select(tokens, labels, "random_5", ["color"])


def test_selections_of_a_ragged_site_use_each_images_own_tokens() -> None:
    """Image 0 has 4 tokens, image 1 has 2, image 2 has 3: each selection pools exactly
    its own image's tokens (checked image by image against plain numpy)."""
    per_image = [np.arange(4 * 3, dtype=np.float32).reshape(4, 3) + 100 * i for i in range(3)]
    per_image[1], per_image[2] = per_image[1][:2], per_image[2][:3]
    objects = [np.array([0, 0, -1, 1]), np.array([-1, 0]), np.array([-1, -1, 0])]
    tokens = SiteTokens(np.concatenate(per_image), np.array([0, 4, 6, 9]))
    labels = SiteLabels(
        image={"color": np.array([2, 5, 1])},
        objects={"color": np.array([[2, 6], [5, -1], [1, -1]])},
        token_objects=np.concatenate(objects).astype(np.int8),
    )
    assert tokens.ragged and tokens.counts.tolist() == [4, 2, 3]
    mean = select(tokens, labels, "mean", ["color"])
    np.testing.assert_allclose(mean.X, [x.mean(0) for x in per_image])
    pairs = list(zip(per_image, objects, strict=True))
    on = select(tokens, labels, "on_object", ["color"])
    np.testing.assert_allclose(on.X, [x[o == 0].mean(0) for x, o in pairs])
    off = select(tokens, labels, "off_object", ["color"])
    np.testing.assert_allclose(off.X, [x[o == -1].mean(0) for x, o in pairs])
    token = select(tokens, labels, "token", ["color"])
    np.testing.assert_allclose(token.X, [per_image[0][0], per_image[0][1], per_image[0][3],
                                         per_image[1][1], per_image[2][2]])  # fmt: skip
    np.testing.assert_array_equal(token.labels["color"], [2, 2, 6, 5, 1])
    np.testing.assert_array_equal(token.groups, [0, 0, 0, 1, 2])
    two = select(tokens, labels, "random_2", ["color"], seed=3)
    for i, x in enumerate(per_image):  # the mean of two distinct tokens of image i
        pairs = [(x[a] + x[b]) / 2 for a in range(len(x)) for b in range(a + 1, len(x))]
        assert any(np.allclose(two.X[i], p) for p in pairs)
    with pytest.raises(ConfigError, match="1 <= k <= 2"):
        select(tokens, labels, "random_3", ["color"])
    with pytest.raises(CacheError, match="between 2 and 4 tokens"):
        tokens.dense()


@pytest.fixture(scope="module")
def cache_path(loaded, tmp_path_factory):
    stimuli = generate(StimulusSpec(n_images=150, seed=21))
    return extract(
        loaded,
        stimuli,
        tmp_path_factory.mktemp("probe-cache") / "c.h5",
        sites=["vision.0", "lm.7"],
        conditions=["baseline", "shuffle"],
        progress=False,
    )


def test_sweep_makes_the_tidy_table(cache_path) -> None:
    with CacheReader(cache_path) as reader:
        table = sweep(
            reader,
            attributes=["color", "count"],
            selections=["mean", "token", "random_2"],
            settings=ProbeSettings(n_boot=200),
            progress=False,
        )
    assert list(table.columns) == TABLE_COLUMNS
    assert len(table) == 2 * 2 * 3 * 2  # sites x conditions x selections x attributes
    assert set(table["metric"]) == {"accuracy"}
    assert (table["ci_low"] <= table["value"]).all() and (table["value"] <= table["ci_high"]).all()
    np.testing.assert_allclose(table["selectivity"], table["value"] - table["control"])
    mean = table[(table.selection == "mean") & (table.condition == "baseline")]
    assert (mean["n"] == 150).all()
    color = mean[(mean.site == "vision.0") & (mean.attribute == "color")].iloc[0]
    assert color.depth == 0 and 0.1 < color.chance < 0.25  # seven colors
    assert color.value > color.chance + 0.15 and color.selectivity > 0.1, color
    token = table[(table.selection == "token") & (table.attribute == "color")]
    assert (token["n"] > 150).all()  # several tokens per image
    # vision sites come before the intervention: shuffling cannot change them
    vision = table[table.site == "vision.0"].set_index(["selection", "attribute", "condition"])
    np.testing.assert_allclose(
        vision.xs("baseline", level="condition")["value"],
        vision.xs("shuffle", level="condition")["value"],
    )


def test_stacked_selections_give_the_results_of_separate_fits(cache_path) -> None:
    """Every selection of a site in one nested cross-validation (stacked rows) is the
    same experiment as one call per selection: with scikit-learn, which fits each problem
    on its own rows, every number is identical; the torch solver agrees too."""
    attributes = ["cell"]
    with CacheReader(cache_path) as reader:
        labels = site_labels(reader, attributes, "lm.7")
        tokens = reader.site_tokens("lm.7")
        folds = group_folds(np.arange(reader.n_written), 5, 0)
    designs = {
        selection: select(tokens, labels, selection, attributes, 0, 2)
        for selection in ("mean", "on_object", "token")
    }
    for backend in (sklearn_backend(), torch_backend(dtype=torch.float64, tol=1e-6)):
        tables = [
            probe_designs(
                designs,
                attributes,
                folds,
                ProbeSettings(n_boot=20, Cs=(0.1, 1.0), backend=backend, stack_selections=stacked),
            )
            for stacked in (False, True)
        ]
        for selection in designs:
            separate, stacked = (pd.DataFrame(t[selection]) for t in tables)
            pd.testing.assert_frame_equal(separate, stacked)
    assert ProbeSettings(backend=sklearn_backend()).stacked is False  # only the GPU default


def test_sweep_refuses_bad_requests(cache_path, tmp_path) -> None:
    with CacheReader(cache_path) as reader:
        with pytest.raises(ConfigError, match=r"\['nope'\] are not labels of this cache"):
            sweep(reader, attributes=["nope"], progress=False)
        with pytest.raises(ConfigError, match="unknown token selection"):
            sweep(reader, attributes=["color"], selections=["everything"], progress=False)
    with pytest.raises(ConfigError, match="at least 2"):
        ProbeSettings(n_splits=1)
    # a cache written before per-object labels existed cannot probe single tokens
    import h5py

    old = tmp_path / "old.h5"
    old.write_bytes(cache_path.read_bytes())
    with h5py.File(old, "a") as f:
        del f["objects"]
        f.attrs["schema_version"] = 1
    with CacheReader(old) as reader:
        with pytest.raises(CacheError, match="no per-object labels.*overwrite=True"):
            sweep(reader, attributes=["color"], selections=["token"], progress=False)
        assert not sweep(
            reader, attributes=["color"], selections=["mean"], sites=["vision.0"], progress=False
        ).empty


def test_bad_settings_and_inputs_are_refused_with_the_fix(rng) -> None:
    import pandas as pd

    from analyses import RunConfig, layer_attribute_heatmap, reconstruction_grid, token_count_curves

    with pytest.raises(ConfigError, match="Cs must be positive"):
        ProbeSettings(Cs=(0.1, 0.0))
    with pytest.raises(ValueError, match="penalty grid must hold positive numbers"):
        LinearProbe(Cs=(-1.0, 1.0)).fit(rng.normal(size=(20, 3)), rng.integers(0, 2, 20))
    with pytest.raises(ValueError, match="needs at least 3 samples"):
        LinearProbe().fit(rng.normal(size=(2, 3)), [0, 1])
    with pytest.raises(ConfigError, match="n_boot must be >= 1, got 0"):
        RunConfig(n_boot=0)
    with pytest.raises(ConfigError, match="tokens_per_image must be >= 1, got 0"):
        RunConfig(tokens_per_image=0)
    table = pd.DataFrame(
        [{"site": "lm.0", "attribute": "color", "selection": "token", "condition": "baseline",
          "metric": "accuracy", "value": 0.5, "chance": 0.2, "ci_low": 0.4, "ci_high": 0.6}]
    )  # fmt: skip
    with pytest.raises(ConfigError, match="no rows for selection 'mean'"):
        layer_attribute_heatmap(table, selection="mean")
    with pytest.raises(ConfigError, match="score must be chance_normalised"):
        layer_attribute_heatmap(table, score="f1")
    with pytest.raises(ConfigError, match="no random_<k> rows"):
        token_count_curves(table)
    with pytest.raises(ConfigError, match="lacks columns"):
        layer_attribute_heatmap(table.drop(columns=["selection"]))
    with pytest.raises(ConfigError, match="no images"):
        reconstruction_grid({})
    with pytest.raises(ConfigError, match="one shape"):
        reconstruction_grid(
            {"a": np.zeros((1, 4, 4, 3), np.uint8), "b": np.zeros((1, 8, 8, 3), np.uint8)}
        )


def test_float64_backend_makes_the_same_choices_as_a_precise_scikit_learn() -> None:
    """Near-tied penalties (a weak signal): the float64 solve chooses C and predicts as
    scikit-learn run to tol 1e-8 does. (On these data the float32 solve picks another C
    in one fold and 5 predictions differ.)"""
    import torch

    rng = np.random.default_rng(2)
    n, d = 150, 12
    X = rng.normal(size=(n, d))
    y = np.stack([(X[:, k] + 2.5 * rng.normal(size=n) > 0).astype(int) for k in range(3)])
    groups = np.arange(n)
    folds = group_folds(groups, 5, 0)
    Cs = (0.01, 0.1, 1.0)
    precise = torch_backend(device="cpu", dtype=torch.float64, tol=1e-7, max_iter=2000)
    fast = nested_logistic(X, y, folds, groups, Cs, backend=precise)
    slow = nested_logistic(X, y, folds, groups, Cs, backend=sklearn_backend(5000, 1e-8))
    np.testing.assert_array_equal(fast.chosen_C, slow.chosen_C)
    np.testing.assert_array_equal(fast.predicted, slow.predicted)


def test_nested_ridge_equals_scikit_learn_fold_by_fold(rng) -> None:
    """Every held-out prediction equals a scikit-learn Ridge fitted on the same rows with
    the penalty a brute-force inner search over the same inner folds chooses."""
    from probes.crossval import inner_folds
    from probes.regression import nested_ridge, r2_score_groups

    groups = np.repeat(np.arange(30), 2)  # two rows per image
    X = rng.normal(size=(60, 5))
    y = np.stack([X @ rng.normal(size=5) + rng.normal(scale=0.5, size=60), rng.normal(size=60)])
    control = y[:, ::-1].copy()
    folds = group_folds(groups, 3, 7)
    alphas = (0.1, 10.0, 1000.0)
    result = nested_ridge(X, y, folds, groups, alphas, control=control, seed=7, device="cpu")
    for k in range(2):
        expected = np.zeros(60)
        expected_control = np.zeros(60)
        for f in range(3):
            inner = inner_folds(groups, folds, f, 3, 7)
            errors = []
            for alpha in sorted(alphas, reverse=True):
                sse = 0.0
                for i in range(3):
                    fit, held = (inner >= 0) & (inner != i), inner == i
                    model = Ridge(alpha=alpha).fit(X[fit], y[k, fit])
                    sse += ((model.predict(X[held]) - y[k, held]) ** 2).sum()
                errors.append(sse)
            alpha = sorted(alphas, reverse=True)[int(np.argmin(errors))]
            assert result.chosen_alpha[k, f] == alpha
            train, test = folds != f, folds == f
            expected[test] = Ridge(alpha=alpha).fit(X[train], y[k, train]).predict(X[test])
            fitted = Ridge(alpha=alpha).fit(X[train], control[k, train])
            expected_control[test] = fitted.predict(X[test])
        np.testing.assert_allclose(result.predicted[k], expected, rtol=1e-8, atol=1e-8)
        np.testing.assert_allclose(result.control_predicted[k], expected_control, atol=1e-8)
        from sklearn.metrics import r2_score

        r2, sse, sst = r2_score_groups(y[k], result.predicted[k], groups)
        assert r2 == pytest.approx(r2_score(y[k], result.predicted[k]))
        assert sse.shape == sst.shape == (30,)
    assert r2_score_groups(y[0], result.predicted[0], groups)[0] > 0.5  # the planted signal


def test_numeric_attributes_get_r2_rows(cache_path, tmp_path, rng) -> None:
    import h5py

    path = tmp_path / "planted.h5"
    path.write_bytes(cache_path.read_bytes())
    with CacheReader(path) as reader:
        pooled = reader.mean_pooled("vision.0")  # (n, d)
    planted = pooled @ rng.normal(size=pooled.shape[1])
    planted += rng.normal(scale=0.3 * planted.std(), size=len(planted))  # R² about 0.9
    with h5py.File(path, "a") as f:
        f["labels/x"][...] = planted.astype(np.float32)
    with CacheReader(path) as reader:
        table = sweep(
            reader,
            sites="vision.0",
            attributes=["x", "color", "y"],
            selections=["mean", "token"],
            conditions="baseline",
            settings=ProbeSettings(n_boot=200),
            progress=False,
        )
    assert table.attribute.tolist() == ["x", "color", "y"] * 2
    numeric = table[table.attribute.isin(["x", "y"])]
    assert (numeric.metric == "r2").all() and (numeric.chance == 0.0).all()
    assert (table[table.attribute == "color"].metric == "accuracy").all()
    assert ((numeric.ci_low <= numeric.value) & (numeric.value <= numeric.ci_high)).all()
    mean = table[table.selection == "mean"].set_index("attribute")
    # the planted signal is found, its control task (values shuffled between images) not;
    # the first object's centre is not linearly readable from this random model's mean
    assert mean.loc["x", "value"] > 0.7 and mean.loc["x", "control"] < 0.1
    assert mean.loc["y", "value"] < 0.1


def test_unprobeable_attributes_are_skipped_with_a_warning(cache_path, tmp_path) -> None:
    import h5py

    path = tmp_path / "labels.h5"
    path.write_bytes(cache_path.read_bytes())
    with h5py.File(path, "a") as f:
        x = f["labels/x"][()]
        x[3] = np.nan
        f["labels/x"][...] = x
        f["labels/y"][...] = np.full_like(x, 2.0)
        size = f["labels/size"][()]
        size[:] = 0
        size[:2] = 1  # one class seen in two images only
        f["labels/size"][...] = size
    with CacheReader(path) as reader, pytest.warns(UserWarning) as caught:
        table = sweep(
            reader,
            sites="vision.0",
            selections="mean",
            conditions="baseline",
            settings=ProbeSettings(n_boot=50),
            progress=False,
        )
    said = " | ".join(str(w.message) for w in caught)
    assert "'x' skipped: 1 of 150 images have no value (first: image 3)" in said
    assert "'y' skipped: every one of the 150 images has the same value" in said
    assert "'size': the classes 'medium' (2) have fewer images than the 5 folds" in said
    assert set(table.attribute) == {"color", "shape", "size", "cell", "count"}


def test_the_old_name_of_token_count_curves_still_draws_them_and_says_so() -> None:
    from analyses import redundancy_curves

    with (
        pytest.warns(DeprecationWarning, match="now token_count_curves"),
        pytest.raises(ConfigError, match="probe table lacks columns"),
    ):
        redundancy_curves(pd.DataFrame({"site": []}))  # the same checks, then the figure
