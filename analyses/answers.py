"""Answer tables: per condition and question type, accuracy with a bootstrap interval,
chance, and the mean log-probability and margin of the right answer (from the rows of
:func:`interp.experiments.answers.score_answers`); and the condition sweeps that the answer figures
read (layer windows, token dropping)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from interp.conditions import (  # the condition families, beside the condition syntax
    condition_parts,
    drop_conditions,
    window_conditions,
)
from interp.errors import ConfigError
from probes.stats import bootstrap_ci

__all__ = [
    "SUMMARY_COLUMNS",
    "drop_conditions",
    "summarise_answers",
    "window_conditions",
]

SUMMARY_COLUMNS: tuple[str, ...] = (
    "condition",
    "question_type",
    "attribute",
    "accuracy",
    "ci_low",
    "ci_high",
    "chance",
    "logprob",
    "margin",
    "n",
)
_ROW_COLUMNS = {"condition", "image", "question_type", "answer", "correct", "logprob", "margin"}


def summarise_answers(
    rows: pd.DataFrame,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    attributes: dict[str, str | None] | None = None,
) -> pd.DataFrame:
    """One row per condition and question type (columns :data:`SUMMARY_COLUMNS`):
    ``accuracy`` with its 95% percentile-bootstrap interval (images resampled: one
    image's questions are not independent), ``chance`` (the share of the type's most
    frequent right answer: what always giving one answer scores), the mean ``logprob``
    of the right answer and ``margin`` over the best wrong option. ``attributes`` maps a
    question type to the probe label of the same fact (the ``attribute`` column)."""
    missing = _ROW_COLUMNS - set(rows.columns)
    if missing:
        raise ConfigError(
            f"answer rows lack columns {sorted(missing)}; pass the rows of "
            f"interp.experiments.answers.score_answers (interp answers writes them)"
        )
    out = []
    conditions = list(dict.fromkeys(rows["condition"]))
    for condition in conditions:
        for kind, part in rows[rows["condition"] == condition].groupby("question_type", sort=False):
            per_image = part.groupby("image")["correct"].agg(["sum", "count"])
            low, high = bootstrap_ci(
                per_image["sum"].to_numpy(float),
                per_image["count"].to_numpy(float),
                n_boot=n_boot,
                seed=seed,
            )
            out.append(
                {
                    "condition": condition,
                    "question_type": kind,
                    "attribute": (attributes or {}).get(kind),
                    "accuracy": float(part["correct"].mean()),
                    "ci_low": low,
                    "ci_high": high,
                    "chance": float(part["answer"].value_counts(normalize=True).iloc[0]),
                    "logprob": float(part["logprob"].mean()),
                    "margin": float(part["margin"].mean()),
                    "n": len(part),
                }
            )
    return pd.DataFrame(out, columns=list(SUMMARY_COLUMNS))


def window_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The ``mask:A-B`` rows of a summary with ``first``, ``last``, ``window`` (``A-B``)
    and ``drop`` (the baseline's accuracy minus the window's), per question type."""
    base = summary[summary["condition"] == "baseline"].set_index("question_type")["accuracy"]
    rows = []
    for _, row in summary.iterrows():
        kind, parts = condition_parts(row["condition"])
        if kind != "mask" or len(parts) != 2:  # text-only windows are not part of a sweep
            continue
        rows.append(
            {
                **row.to_dict(),
                "first": int(parts[0]),
                "last": int(parts[1]),
                "window": f"{int(parts[0])}-{int(parts[1])}",
                "drop": float(base.get(row["question_type"], np.nan) - row["accuracy"]),
            }
        )
    return pd.DataFrame(rows)


def drop_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The ``drop:POLICY:K`` rows of a summary with ``policy`` and ``k``."""
    rows = []
    for _, row in summary.iterrows():
        kind, parts = condition_parts(row["condition"])
        if kind == "drop":
            rows.append({**row.to_dict(), "policy": parts[0], "k": int(parts[1])})
    return pd.DataFrame(rows)
