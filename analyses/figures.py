"""Plotly figures from tidy probe tables. Building a figure never writes a file."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from interp.errors import ConfigError
from interp.sites import sort_sites

__all__ = ["layer_attribute_heatmap", "redundancy_curves"]

_PROBE_COLUMNS = {"site", "attribute", "selection", "condition", "metric", "value", "chance"}


def _check(table: pd.DataFrame, needed: set[str]) -> None:
    missing = needed - set(table.columns)
    if missing:
        raise ConfigError(
            f"probe table lacks columns {sorted(missing)}; got {list(table.columns)}; pass "
            f"the table of probes.sweep (or interp run's probes.csv)"
        )


def layer_attribute_heatmap(
    table: pd.DataFrame, selection: str = "mean", value: str = "value"
) -> go.Figure:
    """Attributes x sites (depth order), cell = probe accuracy, one panel per condition.

    ``table`` is the tidy probe table (``probes.sweep``); the rows of one token
    ``selection`` with metric ``accuracy`` are drawn. Hovering a cell shows the 95%
    interval, the chance level and the control task's accuracy.
    """
    _check(table, _PROBE_COLUMNS | {value})
    table = table[(table["selection"] == selection) & (table["metric"] == "accuracy")]
    if table.empty:
        raise ConfigError(f"the probe table has no accuracy rows for selection {selection!r}")
    conditions = list(dict.fromkeys(table["condition"]))
    sites = sort_sites(list(dict.fromkeys(table["site"])))
    attributes = sorted(dict.fromkeys(table["attribute"]))
    fig = make_subplots(
        rows=len(conditions),
        cols=1,
        shared_xaxes=True,
        subplot_titles=conditions,
        vertical_spacing=0.12 / max(1, len(conditions) - 1) if len(conditions) > 1 else 0.0,
    )
    for row, condition in enumerate(conditions, start=1):
        part = table[table["condition"] == condition]
        grid = part.pivot_table(index="attribute", columns="site", values=value).reindex(
            index=attributes, columns=sites
        )
        extra = np.stack(
            [
                part.pivot_table(index="attribute", columns="site", values=column).reindex(
                    index=attributes, columns=sites
                )
                for column in ("chance", "ci_low", "ci_high", "control")
                if column in part
            ],
            axis=-1,
        )  # (attributes, sites, extra columns)
        fig.add_trace(
            go.Heatmap(
                z=grid.to_numpy(),
                x=sites,
                y=attributes,
                customdata=extra,
                zmin=0.0,
                zmax=1.0,
                colorscale="Viridis",
                coloraxis="coloraxis",
                texttemplate="%{z:.2f}",
                hovertemplate=(
                    "%{y} at %{x}<br>accuracy %{z:.3f}"
                    + (
                        " [%{customdata[1]:.3f}, %{customdata[2]:.3f}]"
                        "<br>control %{customdata[3]:.3f}"
                        if extra.shape[-1] == 4
                        else ""
                    )
                    + f"<br>chance %{{customdata[0]:.3f}}<extra>{condition}</extra>"
                ),
            ),
            row=row,
            col=1,
        )
    fig.update_layout(
        title=f"Probe accuracy by depth ({selection} tokens): which attributes survive where",
        coloraxis={"colorscale": "Viridis", "cmin": 0, "cmax": 1, "colorbar": {"title": "acc."}},
        height=220 + 200 * len(conditions),
        width=max(700, 60 * len(sites) + 200),
        template="plotly_white",
    )
    fig.update_xaxes(title_text="site (forward-pass order)", row=len(conditions), col=1)
    return fig


def redundancy_curves(table: pd.DataFrame, condition: str = "baseline") -> go.Figure:
    """Accuracy against the number of random tokens pooled (``random_<k>`` selections),
    one panel per attribute, one line per site, with 95% intervals as error bars: how
    many visual tokens does each attribute need, at each depth?"""
    _check(table, _PROBE_COLUMNS | {"ci_low", "ci_high"})
    part = table[
        table["selection"].str.startswith("random_")
        & (table["metric"] == "accuracy")
        & (table["condition"] == condition)
    ].copy()
    if part.empty:
        raise ConfigError(
            f"the probe table has no random_<k> rows under {condition!r}; run the sweep "
            f"with the random_<k> selections"
        )
    part["k"] = part["selection"].str.removeprefix("random_").astype(int)
    attributes = sorted(part["attribute"].unique())
    sites = sort_sites(list(part["site"].unique()))
    fig = make_subplots(rows=1, cols=len(attributes), subplot_titles=attributes, shared_yaxes=True)
    palette = plotly.colors.qualitative.Plotly
    for col, attribute in enumerate(attributes, start=1):
        for index, site in enumerate(sites):
            rows = part[(part["attribute"] == attribute) & (part["site"] == site)].sort_values("k")
            fig.add_trace(
                go.Scatter(
                    x=rows["k"],
                    y=rows["value"],
                    error_y={
                        "type": "data",
                        "symmetric": False,
                        "array": rows["ci_high"] - rows["value"],
                        "arrayminus": rows["value"] - rows["ci_low"],
                    },
                    mode="lines+markers",
                    name=site,
                    legendgroup=site,
                    showlegend=col == 1,
                    line={"color": palette[index % len(palette)]},
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(type="log", title_text="random tokens pooled (k)")
    fig.update_yaxes(title_text="accuracy", row=1, col=1)
    fig.update_layout(
        title=f"Redundancy: probe accuracy from k random visual tokens ({condition})",
        height=420,
        width=max(700, 300 * len(attributes)),
        template="plotly_white",
    )
    return fig
