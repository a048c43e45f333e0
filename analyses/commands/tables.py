"""The tables the commands write, read back: which kind a table is, and which figures it
gives (``interp plot``, ``interp report`` and ``interp run`` draw them the same way)."""

from __future__ import annotations

import os

import pandas as pd
import plotly.graph_objects as go

from analyses.figures import (
    headline_selection,
    layer_attribute_heatmap,
    pixel_error_curve,
    token_count_curves,
)
from analyses.files import (
    FIGURE_NAMES,
)
from interp.errors import ConfigError
from probes.sweep import TABLE_COLUMNS


def is_answer_table(table: pd.DataFrame) -> bool:
    """Whether a table is an answer summary (answers.csv)."""
    return "question_type" in table.columns and "accuracy" in table.columns


def answer_figures_of(
    summary: pd.DataFrame, probes: pd.DataFrame | None = None, *, selection: str | None = None
) -> dict[str, go.Figure]:
    """Every figure an answer summary supports: with a probe table of the same model and
    images, decodable vs used (where a question type names a probed attribute); with
    ``mask:A-B`` rows the layer-window sweep; with ``drop:POLICY:K`` rows the
    token-dropping curves."""
    from analyses.answer_figures import decodable_vs_used, drop_curves, window_sweep
    from analyses.answers import drop_table, window_table

    figures = {}
    if probes is not None and summary["attribute"].isin(set(probes["attribute"])).any():
        figures["used"] = decodable_vs_used(probes, summary, selection=selection)
    if not window_table(summary).empty:
        figures["windows"] = window_sweep(summary)
    if not drop_table(summary).empty:
        figures["drops"] = drop_curves(summary)
    return figures


def figures_of(
    table: pd.DataFrame, *, score: str = "chance_normalised", selection: str | None = None
) -> dict[str, go.Figure]:
    """Every figure a table supports: a probe table gives the layer-by-attribute map (of
    ``selection``, default the most informative it has) and, with ``random_<k>`` rows, the
    redundancy curves; a pixel table gives the reconstruction error by depth."""
    if set(table.get("attribute", pd.Series(dtype=str)).unique()) == {"pixels"}:
        return {"pixels": pixel_error_curve(table)}
    chosen = selection or headline_selection(table)
    figures = {"map": layer_attribute_heatmap(table, selection=chosen, score=score)}
    if table["selection"].astype(str).str.startswith("random_").any():
        figures["redundancy"] = token_count_curves(table)
    return figures


def tool_figures_of(table: pd.DataFrame, kind: str) -> dict[str, go.Figure]:
    """The figures of a ``patching``, ``lens`` or ``attention`` table (its
    :func:`table_kind`)."""
    from analyses.answer_figures import patching_map
    from analyses.lens_figures import attention_map, attention_mass, lens_rank_curve

    if kind == "patching":
        methods = list(dict.fromkeys(table["method"]))
        return {f"patching_{m}": patching_map(table, method=m) for m in methods}
    if kind == "lens":
        return {"lens": lens_rank_curve(table)}
    first = int(table["image"].min())
    return {"attention": attention_map(table, image=first), "attention_mass": attention_mass(table)}


_DRAWN_ELSEWHERE = {
    "redundancy (redundancy.csv)": ({"metric", "value", "site"}, "interp redundancy"),
    "paired accuracy (paired.csv)": ({"pair_accuracy", "pattern"}, "interp pairs-eval"),
    "blind pairs (pairs.csv)": ({"i", "j", "cos_a", "cos_b"}, "interp mine"),
    "Mixture-of-Features (mof.csv)": ({"alpha", "mode", "selection"}, "interp mof"),
}


def read_table(path: str | os.PathLike, name: str) -> pd.DataFrame:
    """A CSV table with at least one row: a ConfigError naming the parameter ``name``
    (and the file) otherwise."""
    try:
        table = pd.read_csv(path)
    except pd.errors.EmptyDataError as err:
        raise ConfigError(f"{name}: {str(path)!r} is empty; pass a table a command wrote") from err
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ConfigError(
            f"{name}: {str(path)!r} cannot be read as a CSV table ({err}); pass a table a "
            f"command wrote"
        ) from err
    if table.empty:
        raise ConfigError(f"{name}: {str(path)!r} has a header but no rows: nothing to draw")
    return table


def table_kind(table: pd.DataFrame, path: str | os.PathLike) -> str:
    """Which of interp plot's tables ``table`` is: probe, pixel, answers, patching, lens
    or attention; a ConfigError naming the command that draws any other table."""
    columns = set(table.columns)
    if is_answer_table(table):
        return "answers"
    if {"restored", "method", "token"} <= columns:
        return "patching"
    if {"median_rank", "tokens"} <= columns:
        return "lens"
    if {"weight", "head", "layer"} <= columns:
        return "attention"
    if set(TABLE_COLUMNS) <= columns:
        return "pixel" if set(table["attribute"].unique()) == {"pixels"} else "probe"
    for what, (needed, command) in _DRAWN_ELSEWHERE.items():
        if needed <= columns:
            raise ConfigError(
                f"tables: {str(path)!r} is a {what} table; {command} draws its figure, not "
                f"interp plot"
            )
    raise ConfigError(
        f"tables: {str(path)!r} is no table interp plot draws (its columns: "
        f"{', '.join(map(str, table.columns[:8]))}); pass a table of interp probe, pixels, "
        f"answers, patch, lens or attention"
    )


def _file_of(figure: str) -> str:
    """The file name (without suffix) of a figure: ``patching_<method>`` ->
    ``patching_map_<method>``; the others by :data:`FIGURE_NAMES`."""
    if figure.startswith("patching_"):
        return f"{FIGURE_NAMES['patching']}_{figure.removeprefix('patching_')}"
    return FIGURE_NAMES[figure]
