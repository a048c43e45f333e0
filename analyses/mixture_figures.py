"""The Mixture-of-Features figure (a tidy table in, a ``plotly`` figure out): probe
accuracy against the weight of encoder A, per attribute."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from analyses.theme import PALETTE, apply_theme
from interp.errors import ConfigError

__all__ = ["mixture_curve"]


def mixture_curve(table: pd.DataFrame, selection: str | None = None) -> go.Figure:
    """Held-out probe accuracy of each attribute against ``alpha``, the weight of encoder
    A in the additive mixture (0: encoder B alone, 1: A alone), with its 95% interval;
    the interleaved mixture (both kept side by side) as a dashed level, and chance as a
    dotted one. ``selection``: which pooling (default: the table's first)."""
    needed = {"attribute", "mode", "alpha", "value", "ci_low", "ci_high", "chance", "selection"}
    missing = needed - set(table.columns)
    if missing:
        raise ConfigError(f"mixture table (mof.csv) lacks columns {sorted(missing)}")
    selection = selection or str(table["selection"].iloc[0])
    rows = table[table["selection"] == selection]
    if rows.empty:
        raise ConfigError(
            f"no rows of selection {selection!r}; it has {sorted(set(table.selection))}"
        )
    fig = go.Figure()
    for k, attribute in enumerate(dict.fromkeys(rows["attribute"])):
        color = PALETTE[k % len(PALETTE)]
        mine = rows[rows["attribute"] == attribute]
        additive = mine[mine["mode"] == "additive"].sort_values("alpha")
        fig.add_trace(
            go.Scatter(
                x=additive["alpha"], y=additive["value"], mode="lines+markers", name=attribute,
                legendgroup=attribute, line={"color": color},
                error_y={"type": "data", "symmetric": False,
                         "array": additive["ci_high"] - additive["value"],
                         "arrayminus": additive["value"] - additive["ci_low"]},
            )
        )  # fmt: skip
        for mode, dash in (("interleaved", "dash"), ("chance", "dot")):
            level = (
                mine[mine["mode"] == "interleaved"]["value"]
                if mode == "interleaved"
                else mine["chance"].iloc[:1]
            )
            if len(level):
                fig.add_trace(
                    go.Scatter(
                        x=[0, 1], y=[float(level.iloc[0])] * 2, mode="lines",
                        name=f"{attribute}: {mode}", legendgroup=attribute, showlegend=False,
                        line={"color": color, "dash": dash, "width": 1},
                        hovertemplate=f"{attribute}, {mode}: %{{y:.2f}}<extra></extra>",
                    )
                )  # fmt: skip
    fig.update_xaxes(
        title_text="alpha: weight of encoder A (0: B alone, 1: A alone)", range=[-0.05, 1.05]
    )
    fig.update_yaxes(title_text="held-out accuracy")
    apply_theme(fig, columns=1, height_pt=200)
    fig.update_layout(
        title=f"Mixture of features ({selection}): additive; dashed: interleaved; dotted: chance"
    )
    return fig
