"""``interp run``: every step of the study (extract, probe, answers, redundancy, pixels,
plot, report) in one output folder."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from analyses.commands.answers import AnswersConfig, answers_step
from analyses.commands.command import Command, StepResult
from analyses.commands.extract import ExtractConfig, extract_step
from analyses.commands.inputs import load_step_model
from analyses.commands.options import (
    FAST_DEFAULTS,
    FULL_DEFAULTS,
    _ExtractOptions,
    _Formats,
    _ProbeOptions,
    _Score,
    check_named,
)
from analyses.commands.pixels import PixelConfig, pixel_step
from analyses.commands.probe import ProbeConfig, probe_step
from analyses.commands.report import ReportConfig, report_step, versions
from analyses.commands.tables import answer_figures_of, figures_of
from analyses.files import (
    FIGURE_NAMES,
    OUTPUT_FILES,
    RUN_MARKER,
)
from analyses.outputs import (
    check_output_folder,
    check_writable,
    publish,
    remove_outputs,
    write_atomic,
    write_figure,
    write_table,
)
from analyses.provenance import settings_path
from analyses.redundancy import answer_redundancy, probe_redundancy, redundancy_table
from caches import CacheReader
from caches.schema import partial_path
from interp.errors import ConfigError
from interp.options import option
from interp.sources import ImageSet
from probes.pixels import PIXEL_INNER_FOLDS
from probes.selections import check_selection_fits


@dataclass
class RunConfig(_ExtractOptions, _ProbeOptions, _Formats, _Score):
    """Everything ``interp run`` does: extract, probe, pixels, plot and report, into one
    output folder; the command line's options are these fields."""

    out: str = option("output folder", default="interp-results")
    full: bool = option(
        "the exhaustive study: every selection under every condition, 4 tokens per image, "
        "1000 bootstrap resamples (default: the demo's fast choice for what is not given: "
        "mean, on_object and token selections, 2 tokens per image, 200 resamples)",
        default=False,
    )
    n_boot: int | None = option(
        "bootstrap resamples of images for 95% intervals (default: 1000 with --full, else 200)",
        default=None,
        minimum=1,
    )
    tokens_per_image: int | None = option(
        "most object tokens per image in the 'token' selection (default: 4 with --full, else 2)",
        default=None,
        minimum=1,
    )

    def check(self) -> None:
        super().check()
        check_named(self.out, "out", "an output folder")
        if self.n_images is not None:
            self.check_image_count(self.n_images)

    def resolved(self) -> RunConfig:
        """This run with its defaults filled in: with ``full``, every selection under
        every condition and 1000 bootstrap resamples; else :data:`FAST_DEFAULTS` for each
        of those not given (``make demo`` in minutes, still showing the findings)."""
        chosen = FULL_DEFAULTS if self.full else FAST_DEFAULTS
        return self.replace(**{k: v for k, v in chosen.items() if getattr(self, k) is None})

    def check_image_count(self, n_images: int) -> None:
        """Enough images for every probe's folds (a ConfigError that says how many)."""
        fewest = self.fewest_images()
        if n_images < fewest:
            raise ConfigError(
                f"n_images={n_images} is too few for {self.n_splits}-fold probes: the "
                f"pixel probe splits the images into {self.n_splits} x {PIXEL_INNER_FOLDS} "
                f"folds; use at least {fewest} images, or fewer folds (n_splits)"
            )

    def open_data(self) -> ImageSet | None:
        data = super().open_data()
        if data is not None:
            self.check_image_count(len(data))
        return data

    def step(self, cls: type, **changes: Any) -> Any:
        """The settings of one step (``ExtractConfig``, ``ProbeConfig``, ...): this run's
        values of the fields it has, and ``changes``."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {name: getattr(self, name) for name in names if hasattr(self, name)}
        return cls(**{**values, **changes})

    def paths(self) -> dict[str, Path]:
        from analyses.files import OUTPUT_FILES

        return {key: Path(self.out) / name for key, name in OUTPUT_FILES.items()}

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)


def timed(step: Callable[[], Any], timings: dict[str, float], name: str) -> Any:
    """Run ``step`` and record its wall time in seconds under ``name``."""
    start = time.perf_counter()
    try:
        return step()
    finally:
        timings[name] = round(time.perf_counter() - start, 2)


def run(config: RunConfig) -> StepResult:
    """Run the whole study: extract, probe, pixels, plot and report, into ``config.out``
    (see :data:`OUTPUT_FILES`); each step is its command's own. Its tables: ``probes``,
    ``pixels`` (without pixels, none) and ``answers`` (none where the answers were
    skipped); ``extras["skipped"]``: step -> why it was skipped.

    Everything that can be checked before work is checked first (the output folder is
    writable, the device exists, the settings fit the model), before any file is written.
    A finished cache of the same settings in the output folder is reused, and a probe
    table stopped part-way continues (a run stopped while probing resumes there); with
    ``overwrite`` the outputs of an earlier run are removed first (and said so), the cache
    replaced only by a finished one. Figures, the pixel probe's outputs and the report
    are written apart and moved in together.

    Unless ``full``, the settings not given take the demo's fast values
    (:meth:`RunConfig.resolved`).
    """
    config = config.resolved()
    paths = config.paths()
    folder = Path(config.out)
    derived = [path for key, path in paths.items() if key != "cache"]
    derived += [partial_path(paths["probes"])]
    derived += [settings_path(path) for path in derived if ".csv" in path.name]
    marker = folder / RUN_MARKER
    check_output_folder(folder)
    started_as = _marked_settings(config)
    # An unfinished run of the same settings (its marker, no run.json) continues; any
    # other outputs are refused unless overwrite.
    resuming = not config.overwrite and _read_marker(marker) == started_as
    if not resuming:
        check_writable([path for key, path in paths.items() if key != "cache"], config.overwrite)
    timings: dict[str, float] = {}
    started = time.time()
    skipped: dict[str, str] = {}

    def fits(loaded, data) -> None:  # every random_<k> must fit every site at every size
        sizes = data.distinct_sizes
        sites = [loaded.adapter.check_site(s) for s in config.sites or loaded.adapter.sites()]
        for site in sites:
            fewest = min(len(loaded.adapter.token_layout(site, hw)) for hw in sizes)
            for selection in [*(config.selections or ()), *(config.ablation_selections or ())]:
                if selection != "all":
                    check_selection_fits(selection, fewest, f"at site {site!r}")
        skipped.update(_skipped_steps(config, extraction, loaded, data))
        write_atomic(marker, lambda tmp: tmp.write_text(json.dumps(started_as)))

    # Opened once (a label table read and checked, the image count fitting the folds)
    # before the model loads; the extraction takes the opened source.
    data = config.open_data()
    if config.overwrite:
        remove_outputs(
            [p for p in [*derived, marker] if p.exists()],
            "the outputs of an earlier run (overwrite)",
        )
    staging = folder / ".run.partial"
    shutil.rmtree(staging, ignore_errors=True)  # left by a run stopped while publishing
    extraction = config.step(ExtractConfig, out=str(folder))
    if data is not None:
        extraction.data = data
    loaded = load_step_model(extraction)
    cache = timed(lambda: extract_step(extraction, check=fits, loaded=loaded), timings, "extract")
    cache = cache.paths["cache"]
    table = timed(
        lambda: probe_step(
            config.step(ProbeConfig, cache=str(cache), out=str(folder), overwrite=False)
        ),
        timings,
        "probe",
    ).table
    staging.mkdir(parents=True, exist_ok=True)

    answers = None
    if "answers" not in skipped:
        settings = config.step(AnswersConfig, out=str(staging), overwrite=True)
        settings.data = extraction.data
        answers = timed(lambda: answers_step(settings, loaded=loaded), timings, "answers")
        answers = answers.tables["answers"]

    def redundancy() -> None:  # spectra of each image's tokens, k90 / spread, drop curves
        with CacheReader(cache) as reader:
            spectra = redundancy_table(reader, n_boot=config.n_boot, seed=config.seed)
        parts = [spectra, probe_redundancy(table)]
        if answers is not None:
            parts.append(answer_redundancy(answers))
        found = pd.concat([p for p in parts if not p.empty], ignore_index=True)
        write_table(found, staging / OUTPUT_FILES["redundancy_metrics"])

    timed(redundancy, timings, "redundancy")
    pixel_table = None
    if "pixels" not in skipped:
        pixels = timed(
            lambda: pixel_step(config.step(PixelConfig, cache=str(cache), out=str(staging))),
            timings,
            "pixels",
        )
        pixel_table = pixels.table

    def plot() -> None:
        figures = figures_of(table, score=config.score)
        if pixel_table is not None:
            figures.update(figures_of(pixel_table))
        if answers is not None:
            figures.update(answer_figures_of(answers, table))
        for name, figure in figures.items():
            for fmt in dict.fromkeys(["html", *(config.formats or [])]):
                write_figure(figure, staging / f"{FIGURE_NAMES[name]}.{fmt}")

    timed(plot, timings, "plot")
    record = run_record(config, timings, started, skipped)
    write_atomic(staging / OUTPUT_FILES["settings"], lambda tmp: tmp.write_text(record))
    publish(staging, folder)
    timed(lambda: report_step(ReportConfig(run=str(folder))), timings, "report")
    marker.unlink(missing_ok=True)
    written = {key: path for key, path in paths.items() if path.exists()}
    static = [p for p in sorted(folder.iterdir()) if p.suffix in (".pdf", ".svg", ".png")]
    written.update({p.name: p for p in static if p not in written.values()})
    made = {"probes": table, "pixels": pixel_table, "answers": answers}
    return StepResult(
        summary=f"the study of {config.model}: {len(written)} files",
        paths=written,
        tables={name: table for name, table in made.items() if table is not None},
        shown="\n".join(f"skipped: {step} ({why})" for step, why in skipped.items()),
        extras={"skipped": skipped},
    )


_UNRECORDED = ("overwrite", "progress")


def _marked_settings(config: RunConfig) -> dict[str, Any]:
    settings = json.loads(json.dumps(_settings(config)))  # as the marker's JSON reads back
    return {k: v for k, v in settings.items() if k not in _UNRECORDED}


def _settings(config: RunConfig) -> dict[str, Any]:
    """The run's settings, JSON-able (a value of another type as its repr)."""
    settings = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        plain = isinstance(value, (str, int, float, bool, list, type(None)))
        settings[f.name] = value if plain else repr(value)
    return settings


def _read_marker(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _skipped_steps(
    config: RunConfig, extraction: ExtractConfig, loaded: Any, data: Any
) -> dict[str, str]:
    """The optional steps this model and data cannot run, each with why and what would
    make it run (said as a warning; the run does everything else). A step the settings
    ask for explicitly (the answers' ``windows`` / ``drop_ks``) is refused instead."""
    from interp.experiments.answers import scorable

    skipped = {}
    try:
        with warnings.catch_warnings():  # a partly answerable set says so when it runs
            warnings.simplefilter("ignore")
            scorable(loaded, data.questions())
    except ConfigError as err:
        sweeps = ("windows", "drop_ks")
        asked = [f"{k}={getattr(config, k)!r}" for k in sweeps if getattr(config, k)]
        if asked:
            raise ConfigError(
                f"{', '.join(asked)} ask for the model's answers, but they cannot be scored: {err}"
            ) from err
        skipped["answers"] = f"{err}"
    if not extraction.keeps_pixels():
        skipped["pixels"] = (
            "the cache keeps no pixels of your own images (store_pixels=True keeps them)"
        )
    for step, why in skipped.items():
        warnings.warn(f"{step} skipped: {why}", stacklevel=3)
    return skipped


def run_record(
    config: RunConfig,
    timings: dict[str, float],
    started: float,
    skipped: dict[str, str] | None = None,
) -> str:
    """The run's settings, versions, step timings and the steps skipped (with why), as
    the JSON of ``run.json``."""
    return json.dumps(
        {
            "settings": _settings(config),
            "versions": versions(),
            "timings_s": timings,
            "skipped": skipped or {},
            "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
        },
        indent=2,
    )


COMMAND = Command(
    name="run",
    help="all the steps: extract, probe, pixels, plot, report (the demo's fast settings "
    "unless --full)",
    description="Writes OUT/cache.h5, OUT/probes.csv, the figures, OUT/run.json and "
    "OUT/report.html.",
    config=RunConfig,
    step=run,
)
