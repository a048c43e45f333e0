"""``interp probe``: cache -> probe table: every site x condition x selection x attribute."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from analyses.commands.command import Command, StepResult
from analyses.commands.options import _ProbeOptions, check_named, output_file
from analyses.files import OUTPUT_FILES
from analyses.outputs import (
    check_output_folder,
    write_atomic,
    write_table,
)
from analyses.provenance import settings_path
from caches import CacheReader
from caches.schema import partial_path
from interp.errors import OutputExistsError
from interp.options import option
from probes import sweep
from probes.sweep import TABLE_COLUMNS


@dataclass
class ProbeConfig(_ProbeOptions):
    """``interp probe``: every site x condition x selection x attribute of ``cache``,
    into the table ``out``; never writes to the cache."""

    cache: str = option("the cache to probe", default="", positional=True)
    out: str = option(
        "output folder: writes OUT/probes.csv and OUT/probes.csv.settings.json", default="."
    )

    def check(self) -> None:
        super().check()
        check_named(self.cache, "cache", "a cache file (interp extract writes one)")
        check_named(self.out, "out", "an output folder")
        self.table_path()  # an old-style file path says so now

    def table_path(self) -> Path:
        """The probe table this probe writes: ``out/probes.csv``."""
        return output_file(self.out, OUTPUT_FILES["probes"])


_KEY = ["site", "condition", "selection", "attribute"]


_CACHE_IDENTITY = (
    "model", "weights_id", "processor_id", "dtype", "prompt", "stimuli", "data",
    "store_dtype", "schema_version",
)  # fmt: skip


def _table_settings(reader: CacheReader, config: ProbeConfig) -> dict[str, Any]:
    settings = config.probe_settings()
    attrs = reader.attrs
    return {
        "cache": {key: attrs.get(key) for key in _CACHE_IDENTITY},
        "n_images": reader.n_written,
        "n_splits": settings.n_splits,
        "n_inner": settings.n_inner,
        "n_boot": settings.n_boot,
        "seed": settings.seed,
        "tokens_per_image": settings.tokens_per_image,
        "Cs": list(settings.Cs),
        "alphas": list(settings.alphas),
    }


def _kept_rows(path: Path, wanted: dict[str, Any], overwrite: bool) -> pd.DataFrame | None:
    """The rows of the table at ``path`` (finished or ``.partial``) if it was made with
    the ``wanted`` settings; None if there is none; an OutputExistsError naming the first
    difference otherwise (unless ``overwrite``: then it is set aside for a new table)."""
    if not path.exists():
        return None
    try:
        found = json.loads(settings_path(path).read_text())
    except (OSError, json.JSONDecodeError):
        found = None
    if found == wanted:
        return pd.read_csv(path)
    if overwrite:
        return None
    if found is None:
        difference = "it has no readable settings file beside it"
    else:
        key = next(k for k in wanted if found.get(k) != wanted[k])
        difference = f"its {key!r} differs (found {found.get(key)!r}, now {wanted[key]!r})"
    raise OutputExistsError(
        f"{path} already exists and was made with other settings: {difference}; pass "
        f"overwrite=True to replace it or choose another out=FILE"
    )


def probe_step(config: ProbeConfig) -> StepResult:
    """Probe every site x condition x selection x attribute of ``config.cache`` into the
    table ``OUT/probes.csv`` (its settings in ``probes.csv.settings.json``).

    Never writes to the cache. Resumable: rows are kept in ``<out>.partial`` as each site
    is probed, and a rerun with the same settings continues from them; a finished table of
    the same settings is extended, not redone (adding a selection or an attribute probes
    only the new cells). A table of other settings is refused unless ``overwrite``."""
    out = config.table_path()
    partial = partial_path(out)
    check_output_folder(out.parent if str(out.parent) else Path("."))
    with CacheReader(config.cache) as reader:
        wanted = _table_settings(reader, config)
        kept = [
            rows
            for rows in (
                _kept_rows(out, wanted, config.overwrite),
                _kept_rows(partial, wanted, config.overwrite),
            )
            if rows is not None
        ]
        table = pd.concat(kept) if kept else pd.DataFrame(columns=TABLE_COLUMNS)
        table = table.drop_duplicates(_KEY, keep="last")
        done = set(table[_KEY].itertuples(index=False, name=None))

        def keep(new: pd.DataFrame) -> None:
            nonlocal table
            table = pd.concat([table, new]) if len(table) else new
            write_atomic(settings_path(partial), lambda tmp: tmp.write_text(json.dumps(wanted)))
            write_table(table, partial)

        sweep(
            reader,
            sites=config.sites,
            attributes=config.attributes,
            conditions=config.conditions,
            selections=config.selections,
            ablation_selections=config.probed_under_ablations(),
            settings=config.probe_settings(),
            progress=config.progress,
            done=done,
            on_site=keep,
        )
    table = _in_sweep_order(table.reset_index(drop=True))
    write_atomic(settings_path(out), lambda tmp: tmp.write_text(json.dumps(wanted)))
    write_table(table, out)
    partial.unlink(missing_ok=True)
    settings_path(partial).unlink(missing_ok=True)
    return StepResult(
        summary=f"probe table of {len(table)} rows: {out.name}",
        paths={"probes": out},
        tables={"probes": table},
    )


def _in_sweep_order(table: pd.DataFrame) -> pd.DataFrame:
    """Rows by condition (as first seen), depth, then as they were."""
    if table.empty:
        return table[TABLE_COLUMNS]
    conditions = {c: k for k, c in enumerate(dict.fromkeys(table["condition"]))}
    order = table.assign(_c=table["condition"].map(conditions), _i=range(len(table)))
    order = order.sort_values(["_c", "depth", "_i"], kind="stable")
    return order.drop(columns=["_c", "_i"])[TABLE_COLUMNS].reset_index(drop=True)


COMMAND = Command(
    name="probe",
    help="cache -> probe table: every site x condition x selection x attribute",
    description="Writes OUT (CSV) and OUT.settings.json; never writes to the cache; an "
    "interrupted probe resumes, and new selections or attributes probe only the new "
    "cells.",
    config=ProbeConfig,
    step=probe_step,
)
