"""Redundancy measures against references on constructed tokens and a hand-made table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analyses.answers import SUMMARY_COLUMNS
from analyses.redundancy import (
    answer_redundancy,
    probe_redundancy,
    redundancy_table,
    token_metrics,
)
from caches import CacheReader, extract
from interp import StimulusSpec, generate


def test_rank_one_and_orthogonal_tokens(rng) -> None:
    direction = rng.normal(size=16)
    rank_one = np.outer(rng.uniform(0.5, 2.0, size=10), direction)  # 10 positive multiples
    got = token_metrics(rank_one)
    assert got["effective_rank"] == pytest.approx(1.0)
    assert got["participation_ratio"] == pytest.approx(1.0)
    assert got["mean_cosine"] == pytest.approx(1.0)
    orthogonal = 3.0 * np.linalg.qr(rng.normal(size=(16, 16)))[0][:8]  # 8 orthogonal rows
    got = token_metrics(orthogonal)
    assert got["effective_rank"] == pytest.approx(8.0)
    assert got["participation_ratio"] == pytest.approx(8.0)
    assert got["mean_cosine"] == pytest.approx(0.0, abs=1e-12)


def test_metrics_equal_a_numpy_reference_from_the_gram_matrix(rng) -> None:
    tokens = rng.normal(size=(12, 5)) @ rng.normal(size=(5, 20))  # rank 5
    eigen = np.clip(np.linalg.eigvalsh(tokens @ tokens.T), 0, None)  # s^2, 12 of them
    eigen = eigen[eigen > eigen.max() * 1e-10]
    s = np.sqrt(eigen)
    p = s / s.sum()
    cos = [
        tokens[i] @ tokens[j] / np.linalg.norm(tokens[i]) / np.linalg.norm(tokens[j])
        for i in range(12)
        for j in range(12)
        if i != j
    ]
    got = token_metrics(tokens)
    assert got["effective_rank"] == pytest.approx(np.exp(-(p * np.log(p)).sum()))
    assert got["participation_ratio"] == pytest.approx(eigen.sum() ** 2 / (eigen**2).sum())
    assert got["mean_cosine"] == pytest.approx(np.mean(cos))


def test_a_caches_table_averages_each_images_metrics(loaded, tmp_path) -> None:
    data = generate(StimulusSpec(n_images=6, seed=2))
    path = extract(loaded, data, tmp_path / "c.h5", sites=["vision.0", "lm.2"],
                   conditions="baseline", progress=False)  # fmt: skip
    with CacheReader(path) as reader:
        table = redundancy_table(reader, n_boot=50, chunk=4)
        values = reader.site_array("lm.2")  # (6, 64, d)
    expected = np.mean([token_metrics(v)["effective_rank"] for v in values])
    row = table[(table.site == "lm.2") & (table.metric == "effective_rank")].iloc[0]
    assert row.value == pytest.approx(expected, rel=1e-6) and row.n == 6
    assert row.ci_low <= row.value <= row.ci_high
    assert len(table) == 2 * 3


def test_k90_and_spread_from_a_probe_table() -> None:
    scores = {"mean": 0.9, "random_1": 0.3, "random_4": 0.8, "random_16": 0.9,
              "on_object": 0.9, "off_object": 0.5}  # fmt: skip
    common = {"site": "lm.0", "condition": "baseline", "attribute": "color",
              "metric": "accuracy", "chance": 0.5}  # fmt: skip
    rows = [{**common, "selection": s, "value": v} for s, v in scores.items()]
    table = probe_redundancy(pd.DataFrame(rows)).set_index("metric")["value"]
    # chance-normalised: mean 0.8, random_4 0.6 (< 0.72), random_16 0.8: k90 = 16
    assert table["k90"] == 16
    assert table["spread"] == pytest.approx(0.0 / 0.8)


def _summary() -> pd.DataFrame:
    conditions = {"baseline": 0.9, "drop:random:8": 0.6, "drop:on_object:8": 0.8, "mask:0-1": 0.1}
    rows = [
        dict.fromkeys(SUMMARY_COLUMNS, 0.0)
        | {"condition": c, "question_type": q, "attribute": q, "accuracy": a - 0.1 * k,
           "ci_low": a - 0.2, "ci_high": a, "n": 40}
        for c, a in conditions.items()
        for k, q in enumerate(("color", "count"))
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def test_token_dropping_curves_from_an_answers_table() -> None:
    rows = answer_redundancy(_summary())
    assert set(rows["site"]) == {"answers"} and set(rows["metric"]) == {"answer_accuracy"}
    got = rows.set_index(["condition", "attribute"])["value"]
    assert got[("baseline", "color")] == pytest.approx(0.9)
    assert got[("drop:random:8", "count")] == pytest.approx(0.5)
    assert got[("drop:on_object:8", "color")] == pytest.approx(0.8)
    assert len(rows) == 6, "mask conditions are no token-dropping curve"
    assert answer_redundancy(_summary().iloc[:2]).empty
    with pytest.raises(Exception, match="answers table"):
        answer_redundancy(pd.DataFrame({"condition": ["baseline"]}))


def test_interp_redundancy_overlays_caches(loaded, tmp_path, capsys) -> None:
    from analyses.cli import main

    data = generate(StimulusSpec(n_images=5, seed=2))
    paths = [
        extract(
            loaded,
            data,
            tmp_path / f"{name}.h5",
            sites=["vision.0", "lm.1"],
            conditions="baseline",
            seed=k,
            progress=False,
        )  # fmt: skip
        for k, name in enumerate(("a", "b"))
    ]
    out = tmp_path / "red"
    args = ["redundancy", *map(str, paths), "--labels", "first", "second", "--n-boot", "20",
            "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    table = pd.read_csv(out / "redundancy.csv")
    assert set(table.label) == {"first", "second"} and set(table.site) == {"vision.0", "lm.1"}
    assert (out / "redundancy_by_depth.html").is_file()
    assert "effective_rank" in capsys.readouterr().out
    assert main(["redundancy", str(paths[0]), "--labels", "x", "y", "--out", str(out)]) == 2
    assert "one per cache" in capsys.readouterr().err
    _summary().to_csv(tmp_path / "answers.csv", index=False)
    args = ["redundancy", str(paths[0]), "--answers", str(tmp_path / "answers.csv"),
            "--n-boot", "5", "--out", str(out), "--overwrite"]  # fmt: skip
    assert main(args) == 0
    table = pd.read_csv(out / "redundancy.csv")
    assert (table["metric"] == "answer_accuracy").sum() == 6
