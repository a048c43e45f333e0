"""``interp report``: a run's folder -> one self-contained HTML page of every figure, table and
setting."""

from __future__ import annotations

import base64
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
from analyses.outputs import (
    write_atomic,
)
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
        parts.append(_section("Cache", _definitions(cache_info(cache))))
    if record.get("skipped"):
        parts.append(_section("Steps skipped (and why)", _definitions(record["skipped"])))
    if record:
        settings = record.get("settings", {})
        parts.append(_section("Settings", _definitions(settings)))
        parts.append(_section("Versions", _definitions(record.get("versions", {}))))
        timings = {f"{k} (s)": v for k, v in record.get("timings_s", {}).items()}
        parts.append(
            _section("Timings", _definitions({"started": record.get("started"), **timings}))
        )
    first = True
    for name, figure in figures.items():
        body = figure.to_html(full_html=False, include_plotlyjs=first, default_width="100%")
        first = False
        parts.append(_section(FIGURE_NAMES[name].replace("_", " "), body))
    grid = folder / PIXEL_FILES["pixel_grid"]
    if grid.is_file():
        encoded = base64.b64encode(grid.read_bytes()).decode()
        parts.append(
            _section(
                "pixel reconstructions (held out; originals first, then each depth)",
                f'<img alt="reconstructions" src="data:image/png;base64,{encoded}">',
            )
        )
    selection = headline_selection(table)
    summary = table[table["selection"] == selection].assign(score=lambda t: scored(t, score))
    pivot = summary.pivot_table(
        index=["condition", "attribute"], columns="site", values="score", sort=False
    )
    parts.append(
        _section(
            f"summary: {score.replace('_', ' ')} score, {selection} tokens",
            pivot.round(2).to_html(border=0, na_rep=""),
        )
    )
    if answers is not None:
        accuracy = answers.pivot_table(
            index="condition", columns="question_type", values="accuracy", sort=False
        )
        parts.append(
            _section(
                "answers: accuracy per condition and question type (answers.csv)",
                accuracy.round(2).to_html(border=0, na_rep="") + _collapsed(answers),
            )
        )
    parts.append(_section("probe table (probes.csv)", _collapsed(table)))
    if pixel_table is not None:
        parts.append(_section("pixel table", _collapsed(pixel_table)))
    return _PAGE.format(
        title=html.escape(f"vlm-interp report: {folder.name}"), body="\n".join(parts)
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _section(title: str, body: str) -> str:
    return f"<section><h2>{html.escape(title)}</h2>\n{body}\n</section>"


def _definitions(values: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_shown(v))}</td></tr>"
        for k, v in values.items()
    )
    return f"<table class='kv'>{rows}</table>"


def _shown(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def _collapsed(table: pd.DataFrame) -> str:
    return (
        f"<details><summary>{len(table)} rows</summary>"
        f"{table.round(4).to_html(index=False, border=0, na_rep='')}</details>"
    )


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: Arial, Helvetica, sans-serif; margin: 2em auto; max-width: 1100px;
        color: #222; }}
table {{ border-collapse: collapse; font-size: 12px; }}
th, td {{ padding: 2px 8px; text-align: left; border-bottom: 1px solid #ddd; }}
table.kv th {{ color: #555; font-weight: normal; }}
section {{ margin-bottom: 2em; }}
img {{ max-width: 100%; image-rendering: pixelated; }}
</style></head>
<body>
{body}
</body></html>
"""


COMMAND = Command(
    name="report",
    help="a run's folder -> one self-contained HTML page of every figure, table and setting",
    description="Writes RUN/report.html (or OUT).",
    config=ReportConfig,
    step=report_step,
)
