"""Figures of what the LM reads off the image tokens (tidy tables in, ``plotly`` figures
out; nothing is written): the logit lens's word ranks by depth, attention to the image
on the patch grid and its total by layer."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analyses.grid import grid_traces
from analyses.theme import PALETTE, SEQUENTIAL, apply_theme
from interp.errors import ConfigError
from interp.sites import sort_sites

__all__ = ["attention_mass", "attention_map", "lens_rank_curve"]


def _need(table: pd.DataFrame, columns: set[str], what: str) -> None:
    missing = columns - set(table.columns)
    if missing:
        raise ConfigError(f"{what} lacks columns {sorted(missing)}; got {list(table.columns)}")


def lens_rank_curve(table: pd.DataFrame) -> go.Figure:
    """The logit lens (``interp.experiments.lens.lens_table``): per attribute, the median rank of
    the image's class word among the vocabulary at each LM depth, at the tokens over the
    object and, as a control, at the background tokens (log axis; rank 1 = the top word)."""
    _need(table, {"site", "attribute", "tokens", "median_rank"}, "lens table (lens.csv)")
    attributes = list(dict.fromkeys(table["attribute"]))
    sites = sort_sites(list(dict.fromkeys(table["site"])))
    fig = make_subplots(rows=1, cols=len(attributes), subplot_titles=attributes, shared_yaxes=True)
    for col, attribute in enumerate(attributes, start=1):
        for k, where in enumerate(("on_object", "off_object")):
            rows = table[(table["attribute"] == attribute) & (table["tokens"] == where)]
            rows = rows.set_index("site").reindex(sites)
            fig.add_trace(
                go.Scatter(
                    x=sites, y=rows["median_rank"], mode="lines+markers", name=where,
                    legendgroup=where, showlegend=col == 1,
                    line={"color": PALETTE[k], "dash": "solid" if k == 0 else "dash"},
                ),
                row=1, col=col,
            )  # fmt: skip
    fig.update_yaxes(type="log", title_text="median rank of the class word (1 = top)", col=1)
    apply_theme(fig, columns=2, height_pt=200)
    fig.update_layout(title="Logit lens: does the image token already name its object's class?")
    return fig


def attention_map(
    table: pd.DataFrame,
    *,
    image: int = 0,
    condition: str | None = None,
    picture: np.ndarray | None = None,
) -> go.Figure:
    """Attention from the query position to each patch token of one image, averaged
    over heads, one panel per LM layer on the patch grid (first crop), over the image
    itself when ``picture`` ``(H, W, 3)`` is given; each panel with the layer's total
    attention to the image in its title."""
    _need(table, {"condition", "image", "layer", "head", "row", "col", "weight", "crop"},
          "attention table (attention.csv)")  # fmt: skip
    condition = condition or str(table["condition"].iloc[0])
    part = table[(table["image"] == image) & (table["condition"] == condition)]
    if part.empty:
        raise ConfigError(f"the attention table has no rows of image {image} under {condition!r}")
    part = part[part["crop"] == part["crop"].min()]
    layers = sorted(part["layer"].unique())
    cols = min(4, len(layers))
    n_rows = math.ceil(len(layers) / cols)
    keys = ["layer", "row", "col", *(c for c in ("y0", "x0", "y1", "x1") if c in part)]
    heads = part.groupby(keys, as_index=False)["weight"].mean()
    totals = heads.groupby("layer")["weight"].sum()
    fig = make_subplots(
        rows=n_rows, cols=cols, subplot_titles=[f"layer {i} (sum {totals[i]:.2f})" for i in layers]
    )
    top = float(heads["weight"].max()) or 1.0
    for index, layer in enumerate(layers):
        heat = {
            "zmin": 0, "zmax": top, "colorscale": SEQUENTIAL, "showscale": index == 0,
            "colorbar": {"title": "weight"},
        }  # fmt: skip
        for trace in grid_traces(
            heads[heads["layer"] == layer], "weight", heat=heat, picture=picture
        ):
            fig.add_trace(trace, row=index // cols + 1, col=index % cols + 1)
    fig.update_yaxes(autorange="reversed", showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    apply_theme(fig, columns=2, height_pt=150 * n_rows)
    fig.update_layout(title=f"Attention to the image from the answer position ({condition})")
    return fig


def attention_mass(table: pd.DataFrame) -> go.Figure:
    """The share of the query's attention that goes to the image's patch tokens, per LM
    layer (mean over images and heads), one line per condition."""
    _need(table, {"condition", "image", "layer", "head", "weight"}, "attention table")
    mass = table.groupby(["condition", "image", "layer", "head"], sort=False)["weight"].sum()
    mean = mass.groupby(["condition", "layer"], sort=False).mean().reset_index()
    fig = go.Figure()
    for k, (condition, rows) in enumerate(mean.groupby("condition", sort=False)):
        fig.add_trace(
            go.Scatter(
                x=rows["layer"], y=rows["weight"], mode="lines+markers", name=condition,
                line={"color": PALETTE[k % len(PALETTE)]},
            )
        )  # fmt: skip
    fig.update_xaxes(title_text="LM layer", dtick=1)
    fig.update_yaxes(title_text="attention to the image tokens")
    apply_theme(fig, columns=1, height_pt=200)
    fig.update_layout(title="How much the answer position reads the image, by layer")
    return fig
