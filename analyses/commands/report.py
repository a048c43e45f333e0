"""``interp report``: a run's folder -> one self-contained HTML page of every figure, table and
setting."""

from __future__ import annotations

import html
import json
import platform
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pandas as pd

from analyses.commands.command import Command, StepResult
from analyses.commands.options import check_named, output_file
from analyses.commands.tables import answer_figures_of, figures_of
from analyses.figures import (
    headline_selection,
    scored,
)
from analyses.files import (
    ANSWER_FILES,
    FIGURE_NAMES,
    OUTPUT_FILES,
    PIXEL_FILES,
)
from analyses.outputs import write_atomic
from analyses.pages import collapsed, definitions, page, picture, section
from analyses.provenance import check_same_origin
from caches.info import cache_info
from interp.errors import ConfigError
from interp.options import Settings, option


@dataclass
class ReportConfig(Settings):
    """``interp report``: one self-contained HTML page of a run's folder."""

    run: str = option("a run's output folder", default="", positional=True)
    out: str | None = option("output folder: writes OUT/report.html (default: RUN)", default=None)

    def check(self) -> None:
        check_named(self.run, "run", "a run's output folder (interp run writes one)")
        self.page_path()  # an old-style file path says so now

    def page_path(self) -> Path:
        """The page this report writes: ``out/report.html`` (``out`` default: ``run``)."""
        return output_file(self.out if self.out else self.run, OUTPUT_FILES["report"])


_PACKAGES = ("vlm-interp", "torch", "transformers", "nnsight", "scikit-learn", "h5py", "plotly")


def versions() -> dict[str, str]:
    """Python's and the main packages' versions."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def report_step(config: ReportConfig) -> StepResult:
    """Write the report of the run folder ``config.run`` (default ``RUN/report.html``)."""
    folder = Path(config.run)
    if not (folder / OUTPUT_FILES["probes"]).is_file():
        raise ConfigError(
            f"{str(folder)!r} holds no probes.csv; pass the output folder of interp run "
            f"(or one where interp probe wrote probes.csv)"
        )
    out = config.page_path()
    page = render_report(folder)
    written = write_atomic(out, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return StepResult(summary=f"report of {folder.name}", paths={"report": written})


def render_report(folder: Path) -> str:
    """The report page of the run folder ``folder``, as HTML text."""
    table = pd.read_csv(folder / OUTPUT_FILES["probes"])
    record = _read_json(folder / OUTPUT_FILES["settings"])
    pixel_path = folder / PIXEL_FILES["pixels"]
    pixel_table = pd.read_csv(pixel_path) if pixel_path.is_file() else None
    score = (record.get("settings") or {}).get("score") or "chance_normalised"
    figures = figures_of(table, score=score)
    if pixel_table is not None:
        figures.update(figures_of(pixel_table))
    answers_path = folder / ANSWER_FILES["answers"]
    answers = pd.read_csv(answers_path) if answers_path.is_file() else None
    if answers is not None:
        check_same_origin(folder / OUTPUT_FILES["probes"], answers_path)
        figures.update(answer_figures_of(answers, table))
    parts = [f"<h1>vlm-interp run: {html.escape(str(folder.resolve().name))}</h1>"]
    cache = folder / OUTPUT_FILES["cache"]
    if cache.exists():
        parts.append(section("Cache", definitions(cache_info(cache))))
    if record.get("skipped"):
        parts.append(section("Steps skipped (and why)", definitions(record["skipped"])))
    if record:
        settings = record.get("settings", {})
        parts.append(section("Settings", definitions(settings)))
        parts.append(section("Versions", definitions(record.get("versions", {}))))
        timings = {f"{k} (s)": v for k, v in record.get("timings_s", {}).items()}
        parts.append(section("Timings", definitions({"started": record.get("started"), **timings})))
    first = True
    for name, figure in figures.items():
        body = figure.to_html(full_html=False, include_plotlyjs=first, default_width="100%")
        first = False
        parts.append(section(FIGURE_NAMES[name].replace("_", " "), body))
    grid = folder / PIXEL_FILES["pixel_grid"]
    if grid.is_file():
        parts.append(
            section(
                "pixel reconstructions (held out; originals first, then each depth)",
                picture(grid.read_bytes(), "reconstructions"),
            )
        )
    selection = headline_selection(table)
    summary = table[table["selection"] == selection].assign(score=lambda t: scored(t, score))
    pivot = summary.pivot_table(
        index=["condition", "attribute"], columns="site", values="score", sort=False
    )
    parts.append(
        section(
            f"summary: {score.replace('_', ' ')} score, {selection} tokens",
            pivot.round(2).to_html(border=0, na_rep=""),
        )
    )
    if answers is not None:
        accuracy = answers.pivot_table(
            index="condition", columns="question_type", values="accuracy", sort=False
        )
        parts.append(
            section(
                "answers: accuracy per condition and question type (answers.csv)",
                accuracy.round(2).to_html(border=0, na_rep="") + collapsed(answers),
            )
        )
    parts.append(section("probe table (probes.csv)", collapsed(table)))
    if pixel_table is not None:
        parts.append(section("pixel table", collapsed(pixel_table)))
    return page(f"vlm-interp report: {folder.name}", parts)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


COMMAND = Command(
    name="report",
    help="a run's folder -> one self-contained HTML page of every figure, table and setting",
    description="Writes RUN/report.html (or OUT).",
    config=ReportConfig,
    step=report_step,
)
