"""Plotly figures from tidy probe tables. Building a figure never writes a file."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from interp.errors import ConfigError
from interp.sites import sort_sites

__all__ = ["layer_attribute_heatmap"]


def layer_attribute_heatmap(table: pd.DataFrame, value: str = "accuracy") -> go.Figure:
    """Attributes x sites (depth order), cell = ``value``, one panel per condition.

    ``table`` has at least ``site, attribute, condition, chance`` and ``value`` columns
    (the probe table). Hovering a cell shows the chance level beside the value.
    """
    missing = {"site", "attribute", "condition", "chance", value} - set(table.columns)
    if missing:
        raise ConfigError(f"probe table lacks columns {sorted(missing)}; got {list(table.columns)}")
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
        chance = part.pivot_table(index="attribute", columns="site", values="chance").reindex(
            index=attributes, columns=sites
        )
        fig.add_trace(
            go.Heatmap(
                z=grid.to_numpy(),
                x=sites,
                y=attributes,
                customdata=chance.to_numpy(),
                zmin=0.0,
                zmax=1.0,
                colorscale="Viridis",
                coloraxis="coloraxis",
                texttemplate="%{z:.2f}",
                hovertemplate=(
                    f"%{{y}} at %{{x}}<br>{value} %{{z:.3f}}<br>chance %{{customdata:.3f}}"
                    f"<extra>{condition}</extra>"
                ),
            ),
            row=row,
            col=1,
        )
    fig.update_layout(
        title=f"Probe {value} by depth: which attributes survive where",
        coloraxis={"colorscale": "Viridis", "cmin": 0, "cmax": 1, "colorbar": {"title": value}},
        height=220 + 200 * len(conditions),
        width=max(700, 60 * len(sites) + 200),
        template="plotly_white",
    )
    fig.update_xaxes(title_text="site (forward-pass order)", row=len(conditions), col=1)
    return fig
