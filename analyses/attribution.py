"""Measures over attribution tables (``interp attribute``): tables of the patching
module in the attribution table's columns, the mean map over pairs, and how two methods
agree cell by cell (rank correlation per site, and where they disagree most)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from interp.errors import ConfigError

__all__ = ["as_attribution_rows", "mean_over_pairs", "method_agreement"]

_CELL = ["method", "site", "token", "crop", "row", "col", "y0", "x0", "y1", "x1"]


def as_attribution_rows(table: pd.DataFrame) -> pd.DataFrame:
    """A patching table (exact or attribution patching: ``restored``, ``margin``,
    ``clean_margin``, ``corrupt_margin``) in the attribution table's columns: ``value``
    the share restored, ``output`` the margin, ``clean`` / ``corrupted`` its ends."""
    renamed = {"restored": "value", "margin": "output", "clean_margin": "clean",
               "corrupt_margin": "corrupted"}  # fmt: skip
    return table.rename(columns=renamed)


def mean_over_pairs(table: pd.DataFrame) -> pd.DataFrame:
    """Each method, site and token's ``value`` averaged over the table's pairs (``pair``
    says how many), as rows of the same table; cells some pair lacks are left out."""
    n_pairs = table["pair"].nunique()
    grouped = table.groupby(_CELL, sort=False, dropna=False)
    mean = grouped["value"].agg(["mean", "size"]).reset_index()
    mean = mean[mean["size"] == n_pairs].drop(columns="size").rename(columns={"mean": "value"})
    mean.insert(0, "pair", f"mean of {n_pairs} pairs")
    return mean


def method_agreement(table: pd.DataFrame, method: str, reference: str = "exact") -> pd.DataFrame:
    """Per pair and site: how ``method``'s values rank the tokens against ``reference``'s
    for the same cells: Spearman's and Pearson's correlation, the share of the
    reference's five largest tokens among the method's five largest, and the token where
    their ranks differ most (the literature's check of attribution patching)."""
    from scipy.stats import pearsonr, spearmanr

    keys = ["pair", "site", "token"]
    found = table[table["method"] == method].set_index(keys)["value"]
    truth = table[table["method"] == reference].set_index(keys)["value"]
    both = pd.concat({"method": found, "reference": truth}, axis=1, join="inner").dropna()
    if both.empty:
        raise ConfigError(
            f"no cell has both {method!r} and {reference!r} values; run both methods on the "
            f"same pairs and sites"
        )
    rows = []
    for (pair, site), part in both.groupby(level=["pair", "site"], sort=False):
        a, b = part["method"].to_numpy(), part["reference"].to_numpy()
        constant = np.ptp(a) == 0 or np.ptp(b) == 0
        ranks = part.rank(ascending=False)
        gap = (ranks["method"] - ranks["reference"]).abs()
        top = min(5, len(part))
        rows.append(
            {
                "pair": pair, "site": site, "method": method, "reference": reference,
                "spearman": np.nan if constant else float(spearmanr(a, b).statistic),
                "pearson": np.nan if constant else float(pearsonr(a, b).statistic),
                "top5_overlap": len(set(part["method"].nlargest(top).index)
                                    & set(part["reference"].nlargest(top).index)) / top,
                "most_apart_token": int(gap.idxmax()[2]),
                "n": len(part),
            }
        )  # fmt: skip
    return pd.DataFrame(rows)
