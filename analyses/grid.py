"""Values per token drawn on the patch grid, over the image when there is one: the
shared panel of the patching and attention maps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

__all__ = ["grid_traces"]

_BOX = ("y0", "x0", "y1", "x1")


def grid_traces(
    rows: pd.DataFrame,
    value: str,
    *,
    heat: dict,
    picture: np.ndarray | None = None,
    opacity: float = 0.6,
) -> list[go.BaseTraceType]:
    """The traces of one panel: ``rows`` (one token each, with ``row``, ``col`` and, to
    draw over ``picture`` ``(H, W, 3)`` uint8, the token's pixel box ``y0 x0 y1 x1``)
    as a heatmap of ``value``; ``heat``: the heatmap's colour settings. Over a picture
    each cell sits on its box (the axes are the image's pixels); otherwise on the grid."""
    grid = rows.pivot_table(index="row", columns="col", values=value)
    if picture is None or not set(_BOX) <= set(rows.columns):
        return [go.Heatmap(z=grid.to_numpy(), x=grid.columns, y=grid.index, **heat)]
    centres_x = rows.groupby("col")[["x0", "x1"]].mean().mean(axis=1).reindex(grid.columns)
    centres_y = rows.groupby("row")[["y0", "y1"]].mean().mean(axis=1).reindex(grid.index)
    return [
        go.Image(z=picture, hoverinfo="skip"),
        go.Heatmap(
            z=grid.to_numpy(), x=centres_x.to_numpy(), y=centres_y.to_numpy(),
            opacity=opacity, **heat,
        ),
    ]  # fmt: skip
