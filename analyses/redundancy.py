"""How redundantly a site spreads an image over its visual tokens (the visual-redundancy
study): spectra of each image's tokens from a cache, and two measures read off a probe
table.

Per image, of its patch tokens ``T`` ``(tokens, d)`` (uncentred: a token's mean is part
of what it carries), with singular values ``s``:

- ``effective_rank``: ``exp(H(p))``, ``p = s / sum(s)`` (Roy & Vetterli): 1 when every
  token is a multiple of one vector, ``min(tokens, d)`` when they are orthogonal and of
  one norm;
- ``participation_ratio``: ``(sum s^2)^2 / sum s^4``, the same ends, weighting the large
  directions more;
- ``mean_cosine``: the mean cosine similarity of the image's distinct token pairs.

Each is averaged over images, with a 95% bootstrap interval over images. From a probe
table with ``random_<k>`` rows: ``k90``, the fewest random tokens whose pooled probe
reaches 90% of the all-token (``mean``) probe's chance-normalised score; and
``spread``, the off-object score over the on-object score, both chance-normalised (how
far an attribute's information reaches beyond the tokens it is drawn under). From an
answers table (``answers.csv``) with ``drop:POLICY:K`` conditions: the token-dropping
curves, ``answer_accuracy`` per condition (baseline included) and question type, at the
site ``answers`` (the model's output, not a depth).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from caches import CacheReader
from interp.errors import ConfigError
from probes.stats import bootstrap_ci

__all__ = [
    "REDUNDANCY_COLUMNS",
    "SPECTRAL_METRICS",
    "token_metrics",
    "redundancy_table",
    "probe_redundancy",
    "answer_redundancy",
    "redundancy_by_depth",
]

SPECTRAL_METRICS = ("effective_rank", "participation_ratio", "mean_cosine")
REDUNDANCY_COLUMNS = ("site", "condition", "attribute", "metric", "value", "ci_low", "ci_high", "n")
_RANDOM = re.compile(r"^random_(\d+)$")


def token_metrics(tokens: np.ndarray) -> dict[str, float]:
    """The three spectral measures of one image's tokens ``(tokens, d)``."""
    values = np.asarray(tokens, dtype=np.float64)
    if values.ndim != 2 or len(values) < 2:
        raise ConfigError(f"tokens must be (tokens >= 2, d), got shape {values.shape}")
    s = np.linalg.svd(values, compute_uv=False)  # (min(tokens, d),)
    s = s[s > s.max() * 1e-12] if s.max() > 0 else s[:1]
    p = s / s.sum()
    squares = s**2
    unit = values / np.maximum(np.linalg.norm(values, axis=1, keepdims=True), 1e-12)
    cosines = unit @ unit.T  # (tokens, tokens)
    n = len(values)
    return {
        "effective_rank": float(np.exp(-(p * np.log(p)).sum())),
        "participation_ratio": float(squares.sum() ** 2 / (squares**2).sum()),
        "mean_cosine": float((cosines.sum() - np.trace(cosines)) / (n * (n - 1))),
    }


def redundancy_table(
    reader: CacheReader,
    *,
    sites: Sequence[str] | None = None,
    conditions: Sequence[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    chunk: int = 64,
) -> pd.DataFrame:
    """The spectral measures of every site and condition of a cache, averaged over its
    images (columns :data:`REDUNDANCY_COLUMNS`; ``attribute`` empty), read ``chunk``
    images at a time."""
    sites = list(sites) if sites is not None else reader.sites
    conditions = list(conditions) if conditions is not None else reader.conditions
    rows = []
    for site in sites:
        for condition in conditions:
            dataset = reader.acts(site, condition)  # dense (n, tokens, d) or flat
            offsets = reader.offsets(site)
            n = reader.n_written
            per_image = {metric: np.empty(n) for metric in SPECTRAL_METRICS}
            for start in range(0, n, chunk):
                stop = min(n, start + chunk)
                block = (
                    dataset[start:stop]
                    if dataset.ndim == 3
                    else dataset[offsets[start] : offsets[stop]]
                )
                for i in range(start, stop):
                    if dataset.ndim == 3:
                        tokens = block[i - start]
                    else:
                        tokens = block[
                            offsets[i] - offsets[start] : offsets[i + 1] - offsets[start]
                        ]
                    for metric, value in token_metrics(tokens).items():
                        per_image[metric][i] = value
            for metric, values in per_image.items():
                low, high = bootstrap_ci(values, np.ones(n), n_boot=n_boot, seed=seed)
                rows.append(
                    {
                        "site": site, "condition": condition, "attribute": "", "metric": metric,
                        "value": float(values.mean()), "ci_low": low, "ci_high": high, "n": n,
                    }
                )  # fmt: skip
    return pd.DataFrame(rows, columns=list(REDUNDANCY_COLUMNS))


def probe_redundancy(table: pd.DataFrame, share: float = 0.9) -> pd.DataFrame:
    """``k90`` and ``spread`` (see the module doc) per site, condition and categorical
    attribute of a probe table (``probes.csv``); a cell without the rows it needs is left
    out. Columns :data:`REDUNDANCY_COLUMNS` (no interval: NaN)."""
    needed = {"site", "condition", "attribute", "selection", "metric", "value", "chance"}
    missing = needed - set(table.columns)
    if missing:
        raise ConfigError(f"a probe table (probes.csv) has the columns {sorted(missing)}")
    accuracy = table[table["metric"] == "accuracy"].copy()
    accuracy["score"] = (accuracy["value"] - accuracy["chance"]) / (1 - accuracy["chance"])
    rows = []
    for (site, condition, attribute), cell in accuracy.groupby(
        ["site", "condition", "attribute"], sort=False
    ):
        score = cell.set_index("selection")["score"]
        if "mean" in score:
            ks = sorted(
                (int(m.group(1)), value)
                for selection, value in score.items()
                if (m := _RANDOM.match(str(selection)))
            )
            reached = [k for k, value in ks if value >= share * score["mean"]]
            if ks:
                rows.append(
                    (site, condition, attribute, "k90", float(reached[0]) if reached else np.nan)
                )
        if "on_object" in score and "off_object" in score and score["on_object"] > 0:
            rows.append(
                (site, condition, attribute, "spread", score["off_object"] / score["on_object"])
            )
    return pd.DataFrame(
        [
            {
                "site": s,
                "condition": c,
                "attribute": a,
                "metric": m,
                "value": v,
                "ci_low": np.nan,
                "ci_high": np.nan,
                "n": np.nan,
            }
            for s, c, a, m, v in rows
        ],  # fmt: skip
        columns=list(REDUNDANCY_COLUMNS),
    )


def answer_redundancy(summary: pd.DataFrame) -> pd.DataFrame:
    """The token-dropping curves of an answers summary (``answers.csv``): per question
    type, the accuracy under each ``drop:POLICY:K`` condition and the baseline, as
    :data:`REDUNDANCY_COLUMNS` rows at site ``answers`` (none without drop conditions)."""
    from analyses.answers import SUMMARY_COLUMNS, drop_table

    missing = set(SUMMARY_COLUMNS) - set(summary.columns)
    if missing:
        raise ConfigError(
            f"an answers table (answers.csv, interp answers writes it) has the columns "
            f"{sorted(missing)}"
        )
    drops = drop_table(summary)
    if drops.empty:
        return pd.DataFrame(columns=list(REDUNDANCY_COLUMNS))
    rows = pd.concat([summary[summary["condition"] == "baseline"], drops[list(summary.columns)]])
    return pd.DataFrame(
        {
            "site": "answers",
            "condition": rows["condition"].to_numpy(),
            "attribute": rows["question_type"].to_numpy(),
            "metric": "answer_accuracy",
            "value": rows["accuracy"].to_numpy(dtype=float),
            "ci_low": rows["ci_low"].to_numpy(dtype=float),
            "ci_high": rows["ci_high"].to_numpy(dtype=float),
            "n": rows["n"].to_numpy(dtype=float),
        },
        columns=list(REDUNDANCY_COLUMNS),
    )


def redundancy_by_depth(table: pd.DataFrame, condition: str = "baseline") -> go.Figure:
    """Each spectral measure against depth (one panel each), one line per ``label`` (a
    model or checkpoint: the table's ``label`` column, where several are overlaid), with
    95% intervals; a table of :func:`redundancy_table` rows (``condition`` shown)."""
    from plotly.subplots import make_subplots

    from analyses.theme import PALETTE, apply_theme
    from interp.sites import sort_sites

    rows = table[(table["condition"] == condition) & table["metric"].isin(SPECTRAL_METRICS)]
    if rows.empty:
        raise ConfigError(f"no spectral rows under condition {condition!r} in the table")
    labels = list(dict.fromkeys(rows["label"])) if "label" in rows else [""]
    fig = make_subplots(
        rows=1, cols=3, subplot_titles=[m.replace("_", " ") for m in SPECTRAL_METRICS]
    )
    for col, metric in enumerate(SPECTRAL_METRICS, start=1):
        for k, label in enumerate(labels):
            mine = rows[(rows["metric"] == metric) & ((rows["label"] == label) if label else True)]
            mine = mine.set_index("site").reindex(sort_sites(list(mine["site"])))
            fig.add_trace(
                go.Scatter(
                    x=list(mine.index), y=mine["value"], mode="lines+markers", name=label or metric,
                    legendgroup=label, showlegend=col == 1 and bool(label),
                    line={"color": PALETTE[k % len(PALETTE)]},
                    error_y={"type": "data", "symmetric": False,
                             "array": mine["ci_high"] - mine["value"],
                             "arrayminus": mine["value"] - mine["ci_low"]},
                ),
                row=1, col=col,
            )  # fmt: skip
    apply_theme(fig, columns=2, height_pt=180)
    fig.update_layout(title=f"How redundantly each depth spreads the image ({condition})")
    return fig
