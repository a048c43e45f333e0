"""Plotly figures from tidy probe tables. Building a figure never writes a file."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analyses.theme import PALETTE, SEQUENTIAL, apply_theme
from interp.errors import ConfigError
from interp.sites import sort_sites

__all__ = [
    "headline_selection",
    "layer_attribute_heatmap",
    "pixel_error_curve",
    "redundancy_curves",
    "token_count_curves",
    "scored",
]

_PROBE_COLUMNS = {"site", "attribute", "selection", "condition", "metric", "value", "chance"}


def _check(table: pd.DataFrame, needed: set[str]) -> None:
    missing = needed - set(table.columns)
    if missing:
        raise ConfigError(
            f"probe table lacks columns {sorted(missing)}; got {list(table.columns)}; pass "
            f"the table of probes.sweep (or interp run's probes.csv)"
        )


def headline_selection(table: pd.DataFrame) -> str:
    """The token selection a layer map shows by default: the most informative one the
    table has (single object tokens, then the pooled object tokens, then the mean of all
    tokens, where attributes of one object are diluted by the rest of the image)."""
    selections = list(dict.fromkeys(table["selection"].astype(str)))
    for preferred in ("token", "on_object", "mean"):
        if preferred in selections:
            return preferred
    return selections[0]


def scored(table: pd.DataFrame, score: str = "chance_normalised") -> pd.Series:
    """The number a map colours for each row: ``chance_normalised`` ((accuracy - chance)
    / (1 - chance): 0 at chance, 1 perfect, comparable across attributes with different
    chance levels; R² rows as they are, their chance being 0), ``accuracy`` (the metric
    itself) or ``selectivity`` (the metric minus the control task's)."""
    if score == "accuracy":
        return table["value"]
    if score == "selectivity":
        return table["value"] - table["control"]
    if score != "chance_normalised":
        raise ConfigError(
            f"score must be chance_normalised, accuracy or selectivity, got {score!r}"
        )
    chance = table["chance"].where(table["metric"] == "accuracy", 0.0)
    return (table["value"] - chance) / (1 - chance).clip(lower=1e-9)


_SCORE_TITLES = {
    "chance_normalised": "above chance",
    "accuracy": "accuracy",
    "selectivity": "selectivity",
}


def layer_attribute_heatmap(
    table: pd.DataFrame,
    selection: str | None = None,
    score: str = "chance_normalised",
    columns: int = 2,
) -> go.Figure:
    """Attributes x sites (depth order), one panel per condition: how much of each
    attribute a probe reads at each depth.

    ``table`` is the tidy probe table (``probes.sweep``); the rows of one token
    ``selection`` (default :func:`headline_selection`) are drawn, coloured by ``score``
    (:func:`scored`: by default the chance-normalised score, so attributes of different
    chance levels compare). Hovering a cell shows the raw metric, its 95% interval, the
    chance level and the control task's value. ``columns``: the paper width it is sized
    for (:func:`analyses.theme.apply_theme`).
    """
    _check(table, _PROBE_COLUMNS)
    selection = selection or headline_selection(table)
    table = table[table["selection"] == selection].copy()
    if table.empty:
        raise ConfigError(f"the probe table has no rows for selection {selection!r}")
    table["score"] = scored(table, score)
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
    for column in ("ci_low", "ci_high", "control"):
        if column not in table:
            table[column] = np.nan
    for row, condition in enumerate(conditions, start=1):
        part = table[table["condition"] == condition]

        def grid(column: str, part: pd.DataFrame = part) -> pd.DataFrame:
            return part.pivot_table(
                index="attribute", columns="site", values=column, aggfunc="first"
            ).reindex(index=attributes, columns=sites)

        metric = grid("metric") if part["metric"].nunique() > 1 else None
        extra = np.stack(
            [
                grid(c).to_numpy(dtype=float)
                for c in ("value", "chance", "ci_low", "ci_high", "control")
            ],
            axis=-1,
        )  # (attributes, sites, 5)
        names = (
            metric.fillna("").to_numpy(dtype=object)
            if metric is not None
            else np.full(extra.shape[:2], part["metric"].iloc[0], dtype=object)
        )
        fig.add_trace(
            go.Heatmap(
                z=grid("score").to_numpy(dtype=float),
                x=sites,
                y=attributes,
                customdata=np.dstack([extra, names[..., None]]),
                coloraxis="coloraxis",
                texttemplate="%{z:.2f}",
                hovertemplate=(
                    "%{y} at %{x}<br>%{customdata[5]} %{customdata[0]:.3f} "
                    "[%{customdata[2]:.3f}, %{customdata[3]:.3f}]"
                    "<br>chance %{customdata[1]:.3f}<br>control %{customdata[4]:.3f}"
                    f"<br>{_SCORE_TITLES[score]} %{{z:.3f}}<extra>{condition}</extra>"
                ),
            ),
            row=row,
            col=1,
        )
    apply_theme(fig, columns=columns, height_pt=110 + 95 * len(conditions))
    fig.update_layout(
        title=f"What a probe reads at each depth ({selection} selection; {_SCORE_TITLES[score]})",
        coloraxis={
            "colorscale": SEQUENTIAL,
            "cmin": 0,
            "cmax": 1,
            "colorbar": {"title": {"text": _SCORE_TITLES[score]}, "thickness": 10},
        },
    )
    fig.update_xaxes(title_text="site (forward-pass order)", row=len(conditions), col=1)
    return fig


def token_count_curves(table: pd.DataFrame, condition: str = "baseline") -> go.Figure:
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
    palette = PALETTE
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
    apply_theme(fig, columns=2)
    fig.update_layout(title=f"Redundancy: probe accuracy from k random visual tokens ({condition})")
    return fig


def pixel_error_curve(table: pd.DataFrame, metric: str = "mae") -> go.Figure:
    """Pixel-probe reconstruction error by depth (a pixel table: ``interp pixels``), one
    line per condition with its 95% interval, and the no-information baseline (the
    training mean of each patch pixel) dashed."""
    _check(table, {"site", "condition", "metric", "value", "ci_low", "ci_high", "chance"})
    part = table[table["metric"] == metric]
    if part.empty:
        raise ConfigError(f"the pixel table has no {metric!r} rows; metrics: {set(table.metric)}")
    sites = sort_sites(list(dict.fromkeys(part["site"])))
    fig = go.Figure()
    for index, (condition, rows) in enumerate(part.groupby("condition", sort=False)):
        rows = rows.set_index("site").reindex(sites)
        colour = PALETTE[index % len(PALETTE)]
        fig.add_trace(
            go.Scatter(
                x=sites, y=rows["value"], mode="lines+markers", name=condition,
                line={"color": colour},
                error_y={
                    "type": "data", "symmetric": False,
                    "array": rows["ci_high"] - rows["value"],
                    "arrayminus": rows["value"] - rows["ci_low"],
                },
            )
        )  # fmt: skip
        fig.add_trace(
            go.Scatter(
                x=sites, y=rows["chance"], mode="lines", name=f"{condition}: mean patch",
                line={"color": colour, "dash": "dash"},
            )
        )  # fmt: skip
    apply_theme(fig, columns=1, height_pt=200)
    label = {"mae": "mean abs. error (0-255)", "psnr": "PSNR (dB)"}.get(metric, metric)
    fig.update_layout(title="Pixels read back from each depth")
    fig.update_xaxes(title_text="site (forward-pass order)")
    fig.update_yaxes(title_text=label)
    return fig


def redundancy_curves(table: pd.DataFrame, condition: str = "baseline") -> go.Figure:
    """The old name of :func:`token_count_curves` (deprecated: the redundancy measures
    by depth are :func:`analyses.redundancy.redundancy_by_depth`)."""
    import warnings

    warnings.warn(
        "redundancy_curves is now token_count_curves (accuracy against the number of "
        "random tokens); the name goes in the next release",
        DeprecationWarning,
        stacklevel=2,
    )
    return token_count_curves(table, condition)
