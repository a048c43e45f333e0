"""A publication theme: figure sizes in points, print-readable fonts, colour-blind-safe
colours. Static exports (PDF, SVG, PNG) keep these sizes: plotly lays a figure out in
CSS pixels, and a PDF page of ``w`` px is ``0.75 w`` points."""

from __future__ import annotations

import plotly.graph_objects as go

from interp.errors import ConfigError

__all__ = ["COLUMN_WIDTHS_PT", "PALETTE", "SEQUENTIAL", "apply_theme", "points_to_px"]

# One column of a two-column paper (3.5 in) and the full text width (7 in), in points.
COLUMN_WIDTHS_PT = {1: 252.0, 2: 504.0}
FONT_PT = 8.0  # the smallest text: tick labels, legends
TITLE_PT = 9.0
# Okabe & Ito's colour-blind-safe qualitative palette, and a sequential scale that stays
# readable under the common colour-vision deficiencies and in greyscale.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#F0E442", "#000"]
SEQUENTIAL = "Cividis"


def points_to_px(points: float) -> float:
    """CSS pixels of a length in points (1 pt = 1/72 in, 1 px = 1/96 in)."""
    return points / 0.75


def apply_theme(fig: go.Figure, *, columns: int = 2, height_pt: float | None = None) -> go.Figure:
    """Size ``fig`` for a ``columns``-wide place in a paper (1 or 2), ``height_pt`` points
    tall (default: 0.62 of the width), with fonts of :data:`FONT_PT` points and the
    colour-blind-safe palette; returns the figure (changed in place)."""
    if columns not in COLUMN_WIDTHS_PT:
        raise ConfigError(f"columns must be 1 or 2, got {columns}")
    width_pt = COLUMN_WIDTHS_PT[columns]
    height_pt = height_pt or 0.62 * width_pt
    fig.update_layout(
        template="simple_white",
        width=round(points_to_px(width_pt)),
        height=round(points_to_px(height_pt)),
        font={"family": "Arial, Helvetica, sans-serif", "size": points_to_px(FONT_PT)},
        title_font={"size": points_to_px(TITLE_PT)},
        colorway=PALETTE,
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
    )
    return fig
