"""``interp plot``: table -> every figure it supports, as HTML, PDF, SVG or PNG."""

from __future__ import annotations

from dataclasses import dataclass

import plotly.graph_objects as go

from analyses.commands.command import Command, StepResult
from analyses.commands.options import _Formats, _Score, check_named
from analyses.commands.tables import (
    _file_of,
    answer_figures_of,
    figures_of,
    read_table,
    table_kind,
    tool_figures_of,
)
from analyses.outputs import (
    check_output_folder,
    check_writable,
    write_figure,
)
from analyses.provenance import check_same_origin
from interp.errors import ConfigError
from interp.options import option


@dataclass
class PlotConfig(_Formats, _Score):
    """``interp plot``: every figure each table supports, into the folder ``out``."""

    tables: list[str] | None = option(
        "probe tables (probes.csv) and pixel tables (pixel_reconstruction.csv)",
        default=None,
        positional=True,
    )
    out: str = option("output folder", default="figures")
    selection: str | None = option(
        "the token selection the layer map shows (default: the most informative the table "
        "has: token, else on_object, else mean)",
        default=None,
    )
    overwrite: bool = option("replace existing figures", default=False)

    def check(self) -> None:
        super().check()
        if not self.tables:
            raise ConfigError("tables must name a probe table (interp probe writes one)")
        check_named(self.out, "out", "an output folder")


def plot_step(config: PlotConfig) -> StepResult:
    """Every figure of each table of ``config.tables``, in each of ``config.formats``
    (default html), into the folder ``config.out``; its paths are ``"<figure>.<format>"
    -> path``. An answer table with a probe table gives decodable vs used as well; patching,
    lens and attention tables give their maps and curves."""
    figures: dict[str, go.Figure] = {}
    answers, probes = None, None
    kinds: dict[str, str] = {}  # kind of table -> the path given for it
    for path in config.tables:
        table = read_table(path, "tables")
        kind = table_kind(table, path)
        if kind in kinds:
            raise ConfigError(
                f"tables: {str(kinds[kind])!r} and {str(path)!r} are both {kind} tables, whose "
                f"figures would be written to the same files; plot each into its own out="
            )
        kinds[kind] = str(path)
        if kind == "answers":
            answers = (path, table)
        elif kind in ("patching", "lens", "attention"):
            figures.update(tool_figures_of(table, kind))
        else:
            figures.update(figures_of(table, score=config.score, selection=config.selection))
            if kind == "probe":
                probes = (path, table)
    if answers is not None:
        if probes is not None:
            check_same_origin(probes[0], answers[0])
        shown = probes[1] if probes is not None else None
        figures.update(answer_figures_of(answers[1], shown, selection=config.selection))
    folder = check_output_folder(config.out)
    formats = config.formats or ["html"]
    paths = {
        f"{name}.{fmt}": folder / f"{_file_of(name)}.{fmt}" for name in figures for fmt in formats
    }
    check_writable(paths.values(), config.overwrite)
    for key, path in paths.items():
        write_figure(figures[key.split(".")[0]], path)
    return StepResult(
        summary=f"{len(figures)} figures of {len(config.tables)} tables",
        paths=paths,
        extras={"figures": figures},
    )


COMMAND = Command(
    name="plot",
    help="table -> every figure it supports, as HTML, PDF, SVG or PNG",
    description="Writes OUT/<figure>.<format> for each figure and --formats.",
    config=PlotConfig,
    step=plot_step,
)
