"""``interp redundancy``: how redundantly each site spreads the image over its tokens, per cache."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analyses.commands.command import Command, StepResult
from analyses.commands.options import _Formats, check_named
from analyses.commands.tables import read_table
from analyses.outputs import (
    check_output_folder,
    check_writable,
    write_figures,
    write_table,
)
from analyses.provenance import cache_origin, check_same_origin
from analyses.redundancy import (
    answer_redundancy,
    probe_redundancy,
    redundancy_by_depth,
    redundancy_table,
)
from caches import CacheReader
from interp.errors import ConfigError
from interp.options import option


@dataclass
class RedundancyConfig(_Formats):
    """``interp redundancy``: how redundantly each site spreads the image over its
    tokens, per cache (several overlaid: models or checkpoints), into the folder ``out``."""

    caches: list[str] | None = option(
        "one or more caches (each a model or checkpoint, overlaid in the figure)",
        default=None,
        positional=True,
    )
    probes: list[str] | None = option(
        "probe tables (probes.csv, one per cache, in order) for k90 and spread (optional)",
        default=None,
    )
    answers: list[str] | None = option(
        "answers tables (answers.csv, one per cache, in order) with drop:POLICY:K "
        "conditions: their token-dropping curves (optional)",
        default=None,
    )
    labels: list[str] | None = option(
        "a name per cache in the table and figure (default: each file's folder and name)",
        default=None,
    )
    sites: list[str] | None = option("sites (default: all)", default=None)
    conditions: list[str] | None = option("conditions (default: every one)", default=None)
    n_boot: int = option(
        "bootstrap resamples of the images for the intervals", default=1000, minimum=1
    )
    seed: int = option("seed of the bootstrap", default=0, minimum=0)
    out: str = option("output folder", default="redundancy")
    overwrite: bool = option("replace existing outputs", default=False)

    def check(self) -> None:
        super().check()
        check_named(self.out, "out", "an output folder")
        if not self.caches:
            raise ConfigError("caches must name at least one cache (interp extract writes one)")
        for name in ("probes", "answers", "labels"):
            given = getattr(self, name)
            if given is not None and len(given) != len(self.caches):
                raise ConfigError(
                    f"{name} must give one per cache ({len(self.caches)}), got {len(given)}"
                )
        self.formats = self.formats or ["html"]


def redundancy_step(config: RedundancyConfig) -> StepResult:
    """Every cache's spectral measures (and, with probe tables, k90 and spread; with
    answers tables, the token-dropping curves), one ``label`` per cache, in
    ``redundancy.csv``, and their figure against depth."""
    from analyses.files import REDUNDANCY_FILES

    folder = check_output_folder(config.out)
    paths = {key: folder / name for key, name in REDUNDANCY_FILES.items()}
    paths.update({f"redundancy.{f}": folder / f"redundancy_by_depth.{f}" for f in config.formats})
    check_writable(paths.values(), config.overwrite)

    labels = config.labels or [
        f"{Path(c).resolve().parent.name}/{Path(c).name}" for c in config.caches
    ]
    extra: list[list[pd.DataFrame]] = [[] for _ in config.caches]
    for k, cache in enumerate(config.caches):  # every table checked against its cache first
        with CacheReader(cache) as reader:
            origin = cache_origin(reader.attrs, reader.n_written)
        for name, given, measure in (
            ("probes", config.probes, probe_redundancy),
            ("answers", config.answers, answer_redundancy),
        ):
            if given:
                check_same_origin(given[k], origin)
                extra[k].append(measure(read_table(given[k], name)))
    tables = []
    for label, cache, more in zip(labels, config.caches, extra, strict=True):
        with CacheReader(cache) as reader:
            part = redundancy_table(
                reader, sites=config.sites, conditions=config.conditions, n_boot=config.n_boot,
                seed=config.seed,
            )  # fmt: skip
        tables.append(pd.concat([part, *more]).assign(label=label))
    table = pd.concat(tables, ignore_index=True)
    write_table(table, paths["redundancy"])
    condition = (
        "baseline" if "baseline" in set(table["condition"]) else str(table["condition"].iloc[0])
    )
    write_figures(redundancy_by_depth(table, condition), paths, "redundancy")
    spectral = table[table.attribute.fillna("") == ""]
    shown = spectral.pivot_table(
        index=["label", "condition", "site"], columns="metric", values="value", sort=False
    )
    return StepResult(
        summary=f"redundancy of {len(config.caches)} caches:",
        paths=paths,
        tables={"redundancy": table},
        shown=shown.to_string(float_format=lambda v: f"{v:.2f}"),
    )


COMMAND = Command(
    name="redundancy",
    help="how redundantly each site spreads the image over its tokens, per cache",
    description="Writes OUT/redundancy.csv (per cache, site and condition: effective rank, "
    "participation ratio and mean cosine of each image's tokens, with intervals; k90"
    " and spread per attribute from --probes tables) and "
    "OUT/redundancy_by_depth.html.",
    config=RedundancyConfig,
    step=redundancy_step,
)
