"""The study in steps, each reading what the one before wrote.

``extract_step`` (data -> cache), ``probe_step`` (cache -> probe table, resumable, never
writing to the cache), ``pixel_step`` (cache -> pixel table and pictures), ``plot_step``
(table -> figures) and ``report_step`` (a run's folder -> one HTML page). Each returns
what it made (tables as ``pandas.DataFrame``, figures as ``plotly`` figures, paths);
``interp run`` (:func:`analyses.pipeline.run`) composes them in one folder.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from analyses.config import ExtractConfig, PixelConfig, PlotConfig, ProbeConfig
from analyses.figures import (
    headline_selection,
    layer_attribute_heatmap,
    pixel_error_curve,
    redundancy_curves,
)
from analyses.outputs import (
    check_output_folder,
    check_writable,
    write_atomic,
    write_figure,
    write_picture,
    write_table,
)
from analyses.pictures import reconstruction_grid
from caches import CacheReader, extract
from caches.schema import partial_path
from interp.errors import ConfigError, OutputExistsError
from probes import pixel_sweep, sweep
from probes.sweep import TABLE_COLUMNS

__all__ = [
    "PixelResult",
    "extract_step",
    "figures_of",
    "pixel_step",
    "plot_step",
    "probe_step",
    "settings_path",
]


# ----- extract --------------------------------------------------------------------------
def extract_step(
    config: ExtractConfig, *, check: Callable[[Any, list], None] | None = None
) -> Path:
    """Load the model, draw the stimuli or open the data, and write the cache
    ``config.out`` (resumed where unfinished, reused where finished with the same
    settings). ``check(loaded, sizes)``, if given, runs once the model is loaded and
    before anything is written (``interp run`` checks its probe settings there)."""
    from interp.loading import load_model
    from interp.stimuli import StimulusSpec, generate

    path = Path(config.out)
    check_output_folder(path.parent if str(path.parent) else Path("."))
    data = config.open_data()  # a label table is read and checked before the model loads
    loaded = load_model(
        config.model,
        dtype=config.dtype,
        device_map=config.device_map,
        local_files_only=config.local_files_only,
    )
    adapter = loaded.adapter
    if data is None:
        n_images = config.n_images or 256
        if config.image_sizes:
            spec = StimulusSpec(
                n_images=n_images, image_sizes=tuple(config.image_sizes), seed=config.seed
            )
        else:
            side = config.image_size or adapter.native_image_size
            spec = StimulusSpec(n_images=n_images, image_size=side, seed=config.seed)
        for side in spec.sizes:  # stimuli are drawn so that every patch is whole pixels
            adapter.check_image_size(side)
        sizes = [(side, side) for side in spec.sizes]
    else:
        sizes = list(data.distinct_sizes)
    for site in config.sites or ():
        adapter.check_site(site)
    if adapter.has_language_model and adapter.prompt_image_token in config.question:
        raise ConfigError(
            f"question must not hold the image token {adapter.prompt_image_token!r} (the "
            f"prompt puts the image before the question), got {config.question!r}; leave "
            f"it out"
        )
    prompt = adapter.default_prompt(config.question)
    adapter.check_prompt(prompt)
    if check is not None:
        check(loaded, sizes)
    data = data if data is not None else generate(spec)
    unknown = [a for a in config.attributes or () if a not in data.labels]
    if unknown:
        raise ConfigError(
            f"attributes {unknown} are not labels of the data; its labels: {', '.join(data.labels)}"
        )
    return extract(
        loaded,
        data,
        path,
        sites=config.sites,
        conditions=config.conditions,
        prompt=prompt,
        batch_size=config.batch_size,
        seed=config.seed,
        overwrite=config.overwrite,
        progress=config.progress,
        store_dtype=config.store_dtype,
        allow_nonfinite=config.allow_nonfinite,
        workers=config.workers,
        store_pixels=config.keeps_pixels(),
    )


# ----- probe ----------------------------------------------------------------------------
_KEY = ["site", "condition", "selection", "attribute"]
# The cache attributes a probe table's rows depend on (another cache: other rows).
_CACHE_IDENTITY = (
    "model", "weights_id", "processor_id", "dtype", "prompt", "stimuli", "data",
    "store_dtype", "schema_version",
)  # fmt: skip


def settings_path(table: str | os.PathLike) -> Path:
    """Where the settings behind a probe table are kept: ``<table>.settings.json``."""
    table = Path(table)
    return table.with_name(table.name + ".settings.json")


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


def probe_step(config: ProbeConfig) -> pd.DataFrame:
    """Probe every site x condition x selection x attribute of ``config.cache`` into the
    table ``config.out`` (CSV; its settings in ``<out>.settings.json``) and return it.

    Never writes to the cache. Resumable: rows are kept in ``<out>.partial`` as each site
    is probed, and a rerun with the same settings continues from them; a finished table of
    the same settings is extended, not redone (adding a selection or an attribute probes
    only the new cells). A table of other settings is refused unless ``overwrite``."""
    out = Path(config.out)
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
    return table


def _in_sweep_order(table: pd.DataFrame) -> pd.DataFrame:
    """Rows by condition (as first seen), depth, then as they were."""
    if table.empty:
        return table[TABLE_COLUMNS]
    conditions = {c: k for k, c in enumerate(dict.fromkeys(table["condition"]))}
    order = table.assign(_c=table["condition"].map(conditions), _i=range(len(table)))
    order = order.sort_values(["_c", "depth", "_i"], kind="stable")
    return order.drop(columns=["_c", "_i"])[TABLE_COLUMNS].reset_index(drop=True)


# ----- pixels ---------------------------------------------------------------------------
PIXEL_FILES = {"pixels": "pixel_reconstruction.csv", "pixel_grid": "pixel_reconstructions.png"}


@dataclass
class PixelResult:
    table: pd.DataFrame  # reconstruction error by depth (probe-table columns)
    pictures: dict[str, Any]  # "original" and each site -> (k, H, W, 3) uint8
    paths: dict[str, Path]


def pixel_step(config: PixelConfig) -> PixelResult:
    """The pixel-value probe of every site of ``config.cache``: the table and the picture
    grid of held-out reconstructions, written into the folder ``config.out``."""
    folder = check_output_folder(config.out)
    paths = {key: folder / name for key, name in PIXEL_FILES.items()}
    check_writable(paths.values(), config.overwrite)
    with CacheReader(config.cache) as reader:
        reader.images  # noqa: B018  (a cache without pixels says so, and how to get them)
        table, shown = pixel_sweep(
            reader,
            sites=config.sites,
            conditions=config.conditions or ["baseline"],
            n_splits=config.n_splits,
            seed=config.seed,
            n_boot=config.n_boot,
            progress=config.progress,
        )
    write_table(table, paths["pixels"])
    write_picture(reconstruction_grid(shown), paths["pixel_grid"])
    return PixelResult(table=table, pictures=shown, paths=paths)


# ----- plot -----------------------------------------------------------------------------
FIGURE_NAMES = {
    "map": "layer_attribute_map",
    "redundancy": "redundancy_curves",
    "pixels": "pixel_error_by_depth",
}


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
        figures["redundancy"] = redundancy_curves(table)
    return figures


def plot_step(config: PlotConfig) -> dict[str, Path]:
    """Every figure of each table of ``config.tables``, in each of ``config.formats``
    (default html), into the folder ``config.out``; returns ``"<figure>.<format>" ->
    path``."""
    figures: dict[str, go.Figure] = {}
    for path in config.tables:
        try:
            table = pd.read_csv(path)
        except (OSError, pd.errors.ParserError, UnicodeDecodeError) as err:
            raise ConfigError(
                f"tables: {str(path)!r} cannot be read as a CSV table ({err}); pass a probe "
                f"table (interp probe) or pixel table (interp pixels)"
            ) from err
        figures.update(figures_of(table, score=config.score, selection=config.selection))
    folder = check_output_folder(config.out)
    formats = config.formats or ["html"]
    paths = {
        f"{name}.{fmt}": folder / f"{FIGURE_NAMES[name]}.{fmt}"
        for name in figures
        for fmt in formats
    }
    check_writable(paths.values(), config.overwrite)
    for key, path in paths.items():
        write_figure(figures[key.split(".")[0]], path)
    return paths


def timed(step: Callable[[], Any], timings: dict[str, float], name: str) -> Any:
    """Run ``step`` and record its wall time in seconds under ``name``."""
    start = time.perf_counter()
    try:
        return step()
    finally:
        timings[name] = round(time.perf_counter() - start, 2)
