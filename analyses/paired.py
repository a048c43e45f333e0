"""Paired evaluation (MMVP): a pair of images counts as right only if every question about
both of its images is answered right, beside the plain per-question accuracy.

Per-question accuracy flatters a model that answers every question the same way: on a
pair whose two images need opposite answers it gets one of two right (50%) and the pair
wrong (0%). The two are reported side by side, per visual pattern (a question type),
each with its chance level and a bootstrap interval over pairs.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from interp.errors import ConfigError

__all__ = ["PAIRED_COLUMNS", "pair_outcomes", "paired_accuracy"]

PAIRED_COLUMNS = (
    "condition",
    "pattern",
    "n_pairs",
    "n_questions",
    "question_accuracy",
    "question_low",
    "question_high",
    "question_chance",
    "pair_accuracy",
    "pair_low",
    "pair_high",
    "pair_chance",
)


def pair_outcomes(
    rows: pd.DataFrame, pairs: pd.DataFrame, chance: Mapping[str, float]
) -> pd.DataFrame:
    """One row per pair, condition and pattern: ``pair`` (index into ``pairs``),
    ``condition``, ``pattern``, ``right`` (questions answered right), ``asked``
    (questions), ``both`` (all of them right), and the chances of a guess: ``question_p``
    (summed over the questions) and ``pair_p`` (all right by guessing).

    ``rows``: answers (``condition, image, question_type, correct``, as
    :func:`interp.experiments.answers.score_answers` gives); ``pairs``: ``i, j`` and, optionally,
    ``pattern`` (default: each question's type is its pattern); ``chance``: the chance of
    guessing a question of each type right (1 / its options)."""
    missing = {"i", "j"} - set(pairs.columns)
    if missing:
        raise ConfigError(f"pairs needs the columns i and j (images), missing {sorted(missing)}")
    needed = {"condition", "image", "question_type", "correct"} - set(rows.columns)
    if needed:
        raise ConfigError(f"answer rows need the columns {sorted(needed)}")
    unknown = set(rows["question_type"]) - set(chance)
    if unknown:
        raise ConfigError(f"no chance level for question types {sorted(unknown)}")
    long = pd.concat(
        [
            pairs.reset_index(drop=True)
            .rename_axis("pair")
            .reset_index()
            .assign(image=pairs[side].to_numpy())
            for side in ("i", "j")
        ]
    )
    merged = long.merge(rows, on="image")
    if "pattern" not in pairs.columns:
        merged["pattern"] = merged["question_type"]
    merged["p"] = merged["question_type"].map(chance).astype(float)
    grouped = merged.groupby(["pair", "condition", "pattern"], sort=False)
    out = grouped.agg(
        right=("correct", "sum"),
        asked=("correct", "size"),
        question_p=("p", "sum"),
        pair_p=("p", "prod"),
        images=("image", "nunique"),
    ).reset_index()
    out = out[out["images"] == 2].drop(columns="images")  # questions about both images
    out["both"] = out["right"] == out["asked"]
    return out.reset_index(drop=True)


def paired_accuracy(
    rows: pd.DataFrame,
    pairs: pd.DataFrame,
    chance: Mapping[str, float],
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Per condition and pattern: per-question and pair accuracy, their chance levels,
    and 95% bootstrap intervals over pairs (columns :data:`PAIRED_COLUMNS`); see
    :func:`pair_outcomes` for the arguments. A pattern counts the pairs with questions of
    it about both images."""
    outcomes = pair_outcomes(rows, pairs, chance)
    rng = np.random.default_rng(seed)
    table = []
    for (condition, pattern), group in outcomes.groupby(["condition", "pattern"], sort=False):
        right, asked = group["right"].to_numpy(float), group["asked"].to_numpy(float)
        both = group["both"].to_numpy(float)
        draws = rng.integers(0, len(group), size=(n_boot, len(group)))  # pairs resampled
        questions = right[draws].sum(1) / asked[draws].sum(1)
        paired = both[draws].mean(1)
        table.append(
            {
                "condition": condition,
                "pattern": pattern,
                "n_pairs": len(group),
                "n_questions": int(asked.sum()),
                "question_accuracy": right.sum() / asked.sum(),
                "question_low": np.quantile(questions, 0.025),
                "question_high": np.quantile(questions, 0.975),
                "question_chance": group["question_p"].sum() / asked.sum(),
                "pair_accuracy": both.mean(),
                "pair_low": np.quantile(paired, 0.025),
                "pair_high": np.quantile(paired, 0.975),
                "pair_chance": group["pair_p"].mean(),
            }
        )
    return pd.DataFrame(table, columns=list(PAIRED_COLUMNS))
