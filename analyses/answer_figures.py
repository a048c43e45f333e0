"""Figures of the model's answers (tidy tables in, ``plotly`` figures out; nothing is
written): decodable vs used, the layer-window sweep, token-dropping curves."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from analyses.answers import SUMMARY_COLUMNS, drop_table, window_table
from analyses.figures import headline_selection, scored
from analyses.grid import grid_traces
from analyses.theme import PALETTE, apply_theme
from interp.errors import ConfigError
from interp.sites import sort_sites

__all__ = ["attribution_map", "decodable_vs_used", "drop_curves", "patching_map", "window_sweep"]


def _check_summary(summary: pd.DataFrame) -> None:
    missing = set(SUMMARY_COLUMNS) - set(summary.columns)
    if missing:
        raise ConfigError(
            f"answer table lacks columns {sorted(missing)}; pass answers.csv (interp "
            f"answers or interp run writes it)"
        )


def _colours(n: int) -> list[str]:
    """``n`` distinct colours: the theme's colour-blind-safe palette where it suffices."""
    return PALETTE if n <= len(PALETTE) else list(qualitative.Dark24)


def _normalised(accuracy: pd.Series, chance: pd.Series) -> pd.Series:
    """(accuracy - chance) / (1 - chance): 0 at chance, 1 perfect."""
    return (accuracy - chance) / (1 - chance).clip(lower=1e-9)


def _grid(n: int) -> tuple[int, int]:
    cols = min(3, n)
    return math.ceil(n / cols), cols


def decodable_vs_used(
    probes: pd.DataFrame, summary: pd.DataFrame, *, selection: str | None = None
) -> go.Figure:
    """Per question type whose fact a probe reads (the summary's ``attribute``): the
    probe score at each LM depth (of ``selection``, default ``mean``: what all the image
    tokens hold together, probed under every condition), one line per condition, and at
    the right end the model's answer accuracy under the same condition. Both
    chance-normalised ((score - chance) / (1 - chance); R² as it is): a fact can stay
    decodable where the answer no longer uses it."""
    _check_summary(summary)
    paired = summary.dropna(subset=["attribute"])
    paired = paired[paired["attribute"].isin(set(probes["attribute"]))]
    if paired.empty:
        raise ConfigError(
            "no question type of the answer table names an attribute of the probe table; "
            "questions need a question_type named as a label column"
        )
    chosen = selection or ("mean" if "mean" in set(probes["selection"]) else None)
    chosen = chosen or headline_selection(probes)
    part = probes[(probes["selection"] == chosen) & probes["site"].str.startswith("lm.")]
    part = part.assign(score=scored(part))
    sites = sort_sites(list(dict.fromkeys(part["site"])))
    kinds = list(dict.fromkeys(paired["question_type"]))
    n_rows, n_cols = _grid(len(kinds))
    fig = make_subplots(
        rows=n_rows,
        cols=n_cols,
        subplot_titles=[
            f"{k} ({paired[paired.question_type == k].attribute.iloc[0]})" for k in kinds
        ],
        shared_yaxes=True,
    )
    conditions = list(dict.fromkeys(paired["condition"]))
    colours = _colours(len(conditions))
    for index, kind in enumerate(kinds):
        row, col = index // n_cols + 1, index % n_cols + 1
        answers = paired[paired["question_type"] == kind]
        attribute = answers["attribute"].iloc[0]
        for c, condition in enumerate(conditions):
            colour = colours[c % len(colours)]
            probe = part[(part["attribute"] == attribute) & (part["condition"] == condition)]
            probe = probe.set_index("site").reindex(sites)
            used = answers[answers["condition"] == condition]
            fig.add_trace(
                go.Scatter(
                    x=sites, y=probe["score"], mode="lines+markers", name=condition,
                    legendgroup=condition, showlegend=index == 0, line={"color": colour},
                ),
                row=row, col=col,
            )  # fmt: skip
            if not used.empty:
                fig.add_trace(
                    go.Scatter(
                        x=["answer"], y=_normalised(used["accuracy"], used["chance"]),
                        mode="markers", marker={"color": colour, "symbol": "diamond", "size": 9},
                        legendgroup=condition, showlegend=False,
                        name=f"{condition}: answers",
                    ),
                    row=row, col=col,
                )  # fmt: skip
    fig.update_yaxes(title_text="score above chance", col=1)
    apply_theme(fig, columns=2, height_pt=170 * n_rows)
    fig.update_layout(title=f"Decodable (probes, {chosen}) vs used (answers), by condition")
    return fig


def window_sweep(summary: pd.DataFrame) -> go.Figure:
    """The layer-window sweep: per question type, the drop in answer accuracy (the
    baseline's minus the window's) when no position attends to the image in LM layers
    A..B, against the window's position (the windows of the width most of them have)."""
    _check_summary(summary)
    table = window_table(summary)
    if table.empty:
        raise ConfigError("the answer table has no mask:A-B rows; answer with windows first")
    widths = (table["last"] - table["first"] + 1).rename("width")
    width = int(widths.value_counts().idxmax())  # the sweep: the width most windows have
    table = table[widths == width].sort_values(["first", "last"])
    labels = list(dict.fromkeys(table["window"]))
    fig = go.Figure()
    groups = table.groupby("question_type", sort=False)
    colours = _colours(groups.ngroups)
    for index, (kind, rows) in enumerate(groups):
        fig.add_trace(
            go.Scatter(
                x=rows["window"], y=rows["drop"],
                mode="lines+markers", name=kind,
                line={"color": colours[index % len(colours)]},
            )
        )  # fmt: skip
    fig.add_hline(y=0, line={"color": "grey", "dash": "dot"})
    fig.update_xaxes(
        title_text="LM layers whose attention to the image is cut", categoryarray=labels
    )
    fig.update_yaxes(title_text="accuracy drop vs baseline")
    apply_theme(fig, columns=2, height_pt=220)
    fig.update_layout(
        title=f"Which LM layers the answers need the image in ({width}-layer windows)"
    )
    return fig


def drop_curves(summary: pd.DataFrame) -> go.Figure:
    """Token dropping: per question type, answer accuracy against the number of image
    tokens kept (log axis), one line per policy; the baseline (every token) dashed."""
    _check_summary(summary)
    table = drop_table(summary)
    if table.empty:
        raise ConfigError("the answer table has no drop:POLICY:K rows; answer with drops first")
    base = summary[summary["condition"] == "baseline"].set_index("question_type")
    kinds = list(dict.fromkeys(table["question_type"]))
    n_rows, n_cols = _grid(len(kinds))
    fig = make_subplots(rows=n_rows, cols=n_cols, subplot_titles=kinds, shared_yaxes=True)
    policies = list(dict.fromkeys(table["policy"]))
    for index, kind in enumerate(kinds):
        row, col = index // n_cols + 1, index % n_cols + 1
        for p, policy in enumerate(policies):
            rows = table[(table["question_type"] == kind) & (table["policy"] == policy)]
            rows = rows.sort_values("k")
            fig.add_trace(
                go.Scatter(
                    x=rows["k"], y=rows["accuracy"], mode="lines+markers", name=policy,
                    legendgroup=policy, showlegend=index == 0,
                    line={"color": PALETTE[p % len(PALETTE)]},
                ),
                row=row, col=col,
            )  # fmt: skip
        if kind in base.index:  # lines across the K range (shapes would not scale the axis)
            span = [table["k"].min(), table["k"].max()]
            for what, style, label in (
                ("accuracy", {"color": "black", "dash": "dash"}, "every token"),
                ("chance", {"color": "grey", "dash": "dot"}, "chance"),
            ):
                fig.add_trace(
                    go.Scatter(
                        x=span, y=[float(base.loc[kind, what])] * 2, mode="lines", line=style,
                        name=label, legendgroup=label, showlegend=index == 0,
                    ),
                    row=row, col=col,
                )  # fmt: skip
    fig.update_xaxes(type="log", title_text="image tokens kept")
    fig.update_yaxes(title_text="accuracy", col=1)
    apply_theme(fig, columns=2, height_pt=170 * n_rows)
    fig.update_layout(title="Answers from K image tokens (dashed: every token; dotted: chance)")
    return fig


def patching_map(
    table: pd.DataFrame, *, method: str = "exact", picture: np.ndarray | None = None
) -> go.Figure:
    """Activation patching on the patch grid: one panel per site (forward-pass order),
    each token's cell coloured by the share of the clean answer's margin that restoring
    it alone brings back, relative to the panel's largest (its title gives it; depths
    differ tenfold), from ``interp.experiments.patching``'s table (the first crop of a multi-crop
    layout), over the image when ``picture`` (the clean one, ``(H, W, 3)``) is given."""
    return attribution_map(
        table, method=method, value="restored", picture=picture,
        what="share of the clean margin restored by one token",
        source="patching.csv (interp patch)",
    )  # fmt: skip


def attribution_map(
    table: pd.DataFrame,
    *,
    method: str,
    value: str = "value",
    picture: np.ndarray | None = None,
    what: str | None = None,
    source: str = "attribution.csv (interp attribute)",
) -> go.Figure:
    """A per-token measure on the patch grid, one panel per site (forward-pass order),
    each panel scaled by its largest absolute value (its title gives it), over the image
    when ``picture`` is given: rows of one ``method`` of a table with ``pair``, ``site``,
    ``token``, ``crop``, ``row``, ``col`` and ``value`` (the first crop of a multi-crop
    layout; several pairs: the first pair's)."""
    needed = {"pair", "method", "site", "token", "crop", "row", "col", value}
    missing = needed - set(table.columns)
    if missing:
        raise ConfigError(f"the table lacks columns {sorted(missing)}; pass {source}")
    part = table[(table["method"] == method) & (table["token"] >= 0)]
    if part.empty:
        raise ConfigError(f"the table has no single-token rows of method {method!r}")
    part = part[part["pair"] == part["pair"].iloc[0]]
    part = part[part["crop"] == part.groupby("site")["crop"].transform("min")]
    found = list(dict.fromkeys(part["site"]))  # "pixels" (per patch) before every depth
    sites = [s for s in found if s == "pixels"] + sort_sites([s for s in found if s != "pixels"])
    peaks = {site: float(part.loc[part["site"] == site, value].abs().max()) for site in sites}
    n_rows, n_cols = _grid(len(sites))
    titles = [f"{site} (max {peaks[site]:.3g})" for site in sites]
    fig = make_subplots(rows=n_rows, cols=n_cols, subplot_titles=titles)
    for index, site in enumerate(sites):
        rows = part[part["site"] == site]
        rows = rows.assign(scaled=rows[value] / (peaks[site] or 1.0))  # depths differ
        heat = {
            "zmin": -1, "zmax": 1, "colorscale": "RdBu", "reversescale": True,
            "showscale": index == 0, "colorbar": {"title": f"{value} / panel max"},
        }  # fmt: skip
        for trace in grid_traces(rows, "scaled", heat=heat, picture=picture):
            fig.add_trace(trace, row=index // n_cols + 1, col=index % n_cols + 1)
    fig.update_yaxes(autorange="reversed", showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    apply_theme(fig, columns=2, height_pt=180 * n_rows)
    pair = str(part["pair"].iloc[0])
    what = what or f"{method.replace('_', ' ')}, per token"
    fig.update_layout(title=f"{what[0].upper()}{what[1:]} ({method}; {pair})")
    return fig
