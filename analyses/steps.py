"""The study in steps, each reading what the one before wrote.

``extract_step`` (data -> cache), ``probe_step`` (cache -> probe table, resumable, never
writing to the cache), ``pixel_step`` (cache -> pixel table and pictures), ``plot_step``
(table -> figures) and ``report_step`` (a run's folder -> one HTML page). Each returns
what it made (tables as ``pandas.DataFrame``, figures as ``plotly`` figures, paths);
``interp run`` (:func:`analyses.pipeline.run`) composes them in one folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from analyses.config import (
    AnswersConfig,
    AttentionConfig,
    ExtractConfig,
    LensConfig,
    PatchConfig,
    PixelConfig,
    PlotConfig,
    ProbeConfig,
)
from analyses.figures import (
    headline_selection,
    layer_attribute_heatmap,
    pixel_error_curve,
    token_count_curves,
)
from analyses.files import (
    ANSWER_FILES,
    ATTENTION_FILES,
    FIGURE_NAMES,
    LENS_FILES,
    PATCH_FILES,
    PIXEL_FILES,
)
from analyses.outputs import (
    check_output_folder,
    check_writable,
    write_atomic,
    write_figure,
    write_figures,
    write_picture,
    write_table,
)
from analyses.pictures import reconstruction_grid
from analyses.provenance import check_same_origin, settings_path
from caches import CacheReader, extract
from caches.schema import partial_path
from interp.errors import ConfigError, OutputExistsError
from interp.sources import ImageSet
from probes import pixel_sweep, sweep
from probes.sweep import TABLE_COLUMNS

__all__ = [
    "ANSWER_FILES",
    "AnswersResult",
    "PATCH_FILES",
    "PatchResult",
    "PixelResult",
    "patch_step",
    "answers_step",
    "attention_step",
    "lens_step",
    "extract_step",
    "answer_figures_of",
    "figures_of",
    "is_answer_table",
    "load_step_model",
    "pixel_step",
    "plot_step",
    "probe_step",
    "settings_path",
]


# ----- extract --------------------------------------------------------------------------
def load_step_model(config: Any, **options: Any) -> Any:
    """The model a step's settings name, loaded (``model``, ``dtype``, ``device_map``,
    ``local_files_only``; ``options`` go to :func:`interp.load_model`)."""
    from interp.loading import load_model
    from interp.organism import ORGANISM_NAME

    return load_model(
        config.model or ORGANISM_NAME,
        dtype=config.dtype,
        device_map=config.device_map,
        local_files_only=config.local_files_only,
        **options,
    )


def step_images(
    config: ExtractConfig | AnswersConfig, loaded: Any, data: ImageSet | None
) -> tuple[ImageSet, list[tuple[int, int]]]:
    """The images a step's settings name: ``data`` (the user's, opened) or the built-in
    stimuli drawn for this model (each side checked against its patch grid); and their
    distinct sizes. The attributes asked for must be labels of them."""
    from interp.stimuli import StimulusSpec, generate

    adapter = loaded.adapter
    if data is None:
        n_images = config.n_images or 256
        drawn = {"n_images": n_images, "seed": config.seed, "complexity": config.complexity}
        if config.image_sizes:
            spec = StimulusSpec(**drawn, image_sizes=tuple(config.image_sizes))
        else:
            spec = StimulusSpec(**drawn, image_size=config.image_size or adapter.native_image_size)
        for side in spec.sizes:  # stimuli are drawn so that every patch is whole pixels
            adapter.check_image_size(side)
        data = generate(spec)
    unknown = [a for a in config.attributes or () if a not in data.labels]
    if unknown:
        raise ConfigError(
            f"attributes {unknown} are not labels of the data; its labels: {', '.join(data.labels)}"
        )
    return data, list(data.distinct_sizes)


def extract_step(
    config: ExtractConfig,
    *,
    check: Callable[[Any, ImageSet], None] | None = None,
    loaded: Any | None = None,
) -> Path:
    """Load the model (unless ``loaded``), draw the stimuli or open the data, and write
    the cache ``config.out`` (resumed where unfinished, reused where finished with the
    same settings). ``check(loaded, data)``, if given, runs once the model is loaded and
    the images are drawn or opened, before anything is written (``interp run`` checks
    its probe settings and which of its steps can run there)."""
    path = Path(config.out)
    check_output_folder(path.parent if str(path.parent) else Path("."))
    data = config.open_data()  # a label table is read and checked before the model loads
    loaded = loaded if loaded is not None else load_step_model(config)
    adapter = loaded.adapter
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
    conditions = config.expanded_conditions(config.conditions, adapter)
    data, _ = step_images(config, loaded, data)
    if check is not None:
        check(loaded, data)
    return extract(
        loaded,
        data,
        path,
        sites=config.sites,
        conditions=conditions,
        prompt=prompt,
        batch_size=config.batch_size,
        seed=config.seed,
        overwrite=config.overwrite,
        progress=config.progress,
        store_dtype=config.store_dtype,
        allow_nonfinite=config.allow_nonfinite,
        workers=config.workers,
        store_pixels=config.keeps_pixels(),
        compression=config.compression,
    )


# ----- answers --------------------------------------------------------------------------


@dataclass
class AnswersResult:
    rows: pd.DataFrame  # one row per question and condition (interp.answers.ANSWER_COLUMNS)
    summary: pd.DataFrame  # per condition and question type (analyses.answers)
    paths: dict[str, Path]


def _cache_source(config: AnswersConfig) -> tuple[AnswersConfig, str | None]:
    """Settings whose model, images and seed are a cache's (``source`` names a cache;
    settings that contradict it are refused), or whose data is ``source`` (your own
    data); and the cache's weights identity (None for data)."""
    import h5py

    from interp.sources import open_source
    from interp.stimuli import StimulusSpec, generate

    source = Path(str(config.source))
    if not source.exists():
        raise ConfigError(
            f"source {str(source)!r} does not exist; pass a cache (interp extract writes "
            f"one) or a folder of your own images with a label table"
        )
    if not (source.is_file() and h5py.is_hdf5(source)):
        return dataclasses.replace(config, source=None, data=str(source)), None
    with CacheReader(source) as reader:
        attrs = reader.attrs
        n_cached = reader.n_written
        seeds = [reader.intervention(c).get("seed") for c in reader.conditions]
        seeds += [d.get("seed") for c in reader.conditions for d in
                  reader.intervention(c).get("by_image_size", {}).values()]  # fmt: skip
    if config.n_images is not None and config.n_images != n_cached:
        raise ConfigError(
            f"n_images={config.n_images} contradicts the cache {str(source)!r}, which holds "
            f"{n_cached} images: leave n_images out to answer about its images, or pass "
            f"the images themselves as data"
        )
    cached_seed = next((int(s) for s in seeds if s is not None), None)
    if cached_seed is None:
        cached_seed = int((attrs.get("stimuli") or {}).get("seed", 0))
    if config.seed is not None and config.seed != cached_seed:
        raise ConfigError(
            f"seed={config.seed} contradicts the cache {str(source)!r}, made with seed "
            f"{cached_seed} (its shuffle and its images): leave seed out to use the cache's"
        )
    origin = attrs.get("data") or {}
    if origin.get("source") == "stimuli" or (not origin and attrs.get("stimuli")):
        spec = dict(origin.get("spec") or attrs["stimuli"])
        spec = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()}
        data: ImageSet = generate(StimulusSpec(**spec))
    elif "path" in origin:
        data = open_source(origin["path"], attributes=origin.get("attributes"))
    else:
        raise ConfigError(
            f"the cache {str(source)!r} does not say where its images came from; pass the "
            f"data itself (data=...)"
        )
    changed = dataclasses.replace(
        config, source=None, data=data, model=config.model or str(attrs["model"]), seed=cached_seed
    )
    return changed, str(attrs.get("weights_id", "unknown"))


def answers_step(config: AnswersConfig, *, loaded: Any | None = None) -> AnswersResult:
    """The model's answers to the data's questions under every condition (the named
    ones, or the model's defaults; with the windows and drops of the settings), written
    into the folder ``config.out``: ``answers.csv`` (per condition and question type:
    accuracy with its interval, chance, log-probability, margin) and ``answer_rows.csv``
    (per question)."""
    from analyses.answers import summarise_answers
    from interp.answers import score_answers

    cached_weights = None
    if config.source is not None:
        config, cached_weights = _cache_source(config)
    if config.seed is None:
        config = dataclasses.replace(config, seed=0)
    folder = check_output_folder(config.out)
    paths = {key: folder / name for key, name in ANSWER_FILES.items()}
    check_writable(paths.values(), config.overwrite)
    data = config.open_data()
    loaded = loaded if loaded is not None else load_step_model(config)
    weights = loaded.identity.get("weights", "unknown")
    if cached_weights not in (None, "unknown") and weights != cached_weights:
        raise ConfigError(
            f"model={config.model!r} is not the model the cache was made with (other "
            f"weights); leave model out to answer with the cache's model, or pass the "
            f"images themselves as data"
        )
    adapter = loaded.adapter
    conditions = config.expanded_conditions(config.conditions, adapter)
    data, _ = step_images(config, loaded, data)
    questions = data.questions()
    rows = score_answers(
        loaded,
        data,
        conditions=conditions if conditions is not None else adapter.conditions,
        questions=questions,
        batch_size=config.batch_size,
        seed=config.seed,
        progress=config.progress,
    )
    attributes = {q.kind: q.attribute for q in questions}
    summary = summarise_answers(rows, n_boot=config.n_boot, seed=config.seed, attributes=attributes)
    made = {
        "origin": {
            "model": loaded.source,
            "weights_id": loaded.identity.get("weights", "unknown"),
            "data": data.describe(),
            "n_images": len(data),
        },
        "conditions": list(dict.fromkeys(rows["condition"])),
        "seed": config.seed,
        "n_boot": config.n_boot,
    }
    for key in ("answer_rows", "answers"):
        write_atomic(settings_path(paths[key]), lambda tmp: tmp.write_text(json.dumps(made)))
        write_table(rows if key == "answer_rows" else summary, paths[key])
    return AnswersResult(rows=rows, summary=summary, paths=paths)


# ----- patching -------------------------------------------------------------------------


@dataclass
class PatchResult:
    table: pd.DataFrame  # interp.patching.PATCH_COLUMNS
    figures: dict[str, go.Figure]
    paths: dict[str, Path]


def _read_image(path: str, what: str) -> Any:
    """An image file as ``(H, W, 3)`` uint8; a ConfigError naming ``what`` otherwise."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError as err:
        raise ConfigError(f"{what}: no image at {path!r}; pass an image file") from err
    except (OSError, UnidentifiedImageError) as err:
        raise ConfigError(f"{what}: {path!r} cannot be read as an image ({err})") from err


def patch_step(config: PatchConfig) -> PatchResult:
    """Activation patching of ``config``'s pair (your own, or a built-in twin pair) at its
    sites, exact and/or by attribution, into the folder ``config.out``: the table (exact
    patching also restores every token of each site at once: the row whose ``token`` is
    minus the token count), the map of each method and a picture of the pair."""
    from PIL import Image

    from analyses.answer_figures import patching_map
    from interp.patching import PatchPair, attribution_margins, patch_margins

    folder = check_output_folder(config.out)
    methods = ["exact", "attribution"] if config.method == "both" else [config.method]
    names = {f"patching_{m}": _file_of(f"patching_{m}") for m in methods}
    formats = config.formats or ["html"]
    paths = {key: folder / name for key, name in PATCH_FILES.items()}
    paths.update({f"{k}.{f}": folder / f"{name}.{f}" for k, name in names.items() for f in formats})
    check_writable(paths.values(), config.overwrite)
    if config.clean is not None:
        pair = PatchPair(
            clean=_read_image(config.clean, "clean"),
            corrupt=_read_image(config.corrupt, "corrupt"),
            question=str(config.question),
            answer=str(config.answer),
            wrong=str(config.wrong),
            name=f"{Path(config.clean).name} vs {Path(config.corrupt).name}",
        )
    loaded = load_step_model(config)
    adapter = loaded.adapter
    if config.clean is None:
        from interp.organism.twins import twin_pair

        side = adapter.native_image_size
        pair = twin_pair(config.twin, side, seed=config.seed)
    sites = config.sites or ["projector", *(f"lm.{i}" for i in range(adapter.n_lm_layers))]
    tables = []
    if "exact" in methods:
        tables.append(patch_margins(loaded, pair, sites, batch_size=config.batch_size, every=True))
    if "attribution" in methods:
        tables.append(attribution_margins(loaded, pair, sites))
    table = pd.concat(tables, ignore_index=True)
    figures = {f"patching_{m}": patching_map(table, method=m, picture=pair.clean) for m in methods}
    write_table(table, paths["patching"])
    gap = np.full((pair.clean.shape[0], 4, 3), 255, dtype=np.uint8)
    write_picture(
        Image.fromarray(np.concatenate([pair.clean, gap, pair.corrupt], 1)), paths["patch_pair"]
    )
    for key, path in paths.items():
        if key.startswith("patching_"):
            write_figure(figures[key.split(".")[0]], path)
    return PatchResult(table=table, figures=figures, paths=paths)


# ----- lens and attention ---------------------------------------------------------------
def lens_step(config: LensConfig) -> tuple[pd.DataFrame, dict[str, Path]]:
    """The logit-lens table of ``config``'s images (``lens.csv``) and its figure, in the
    folder ``config.out``. Attributes: those named, else every categorical label whose
    class words are distinct tokens."""
    from analyses.lens_figures import lens_rank_curve
    from interp.lens import lens_table

    folder = check_output_folder(config.out)
    paths = {key: folder / name for key, name in LENS_FILES.items()}
    check_writable(paths.values(), config.overwrite)
    data = config.open_data()
    loaded = load_step_model(config)
    data, _ = step_images(config, loaded, data)
    table = lens_table(
        loaded,
        data,
        attributes=config.attributes,
        sites=config.sites,
        prompt=loaded.adapter.default_prompt(config.question),
        batch_size=config.batch_size,
    )
    write_table(table, paths["lens"])
    write_figures(lens_rank_curve(table), paths, "lens")
    return table, paths


def attention_step(config: AttentionConfig) -> tuple[pd.DataFrame, dict[str, Path]]:
    """Attention to the image of ``config``'s images under each condition
    (``attention.csv``), its map of the first image and its total by layer, in the folder
    ``config.out``."""
    from analyses.lens_figures import attention_map, attention_mass
    from interp.attention import attention_table, attention_to_image
    from interp.interventions import check_conditions, make_intervention

    folder = check_output_folder(config.out)
    paths = {key: folder / name for key, name in ATTENTION_FILES.items()}
    check_writable(paths.values(), config.overwrite)
    data = config.open_data()
    loaded = load_step_model(config, attn_implementation="eager")
    data, sizes = step_images(config, loaded, data)
    prompt = loaded.adapter.default_prompt(config.question)
    conditions = config.expanded_conditions(config.conditions, loaded.adapter) or ["baseline"]
    conditions = check_conditions(conditions, loaded.adapter, sizes)
    tables = []
    for condition in conditions:
        intervention = make_intervention(condition, seed=config.seed)
        for size in sizes:
            members = np.flatnonzero((data.sizes == np.asarray(size)).all(1))
            for start in range(0, len(members), config.batch_size):
                index = members[start : start + config.batch_size]
                weights = attention_to_image(
                    loaded,
                    data.crops(index),
                    prompt=prompt,
                    layers=config.layers,
                    query=config.query,
                    intervention=intervention,
                )
                part = attention_table(
                    loaded, weights, size, layers=config.layers, condition=condition
                )
                part["image"] = index[part["image"].to_numpy()]
                tables.append(part)
    table = pd.concat(tables, ignore_index=True)
    write_table(table, paths["attention"])
    first = int(table["image"].min())
    picture = data.crops([first])[0]  # drawn under its attention
    write_figure(attention_map(table, image=first, picture=picture), paths["attention_map"])
    write_figure(attention_mass(table), paths["attention_mass"])
    return table, paths


# ----- probe ----------------------------------------------------------------------------
_KEY = ["site", "condition", "selection", "attribute"]
# The cache attributes a probe table's rows depend on (another cache: other rows).
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


def plot_step(config: PlotConfig) -> dict[str, Path]:
    """Every figure of each table of ``config.tables``, in each of ``config.formats``
    (default html), into the folder ``config.out``; returns ``"<figure>.<format>" ->
    path``. An answer table with a probe table gives decodable vs used as well; patching,
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
    return paths


# Tables of the toolkit that interp plot does not draw: what draws them.
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


def timed(step: Callable[[], Any], timings: dict[str, float], name: str) -> Any:
    """Run ``step`` and record its wall time in seconds under ``name``."""
    start = time.perf_counter()
    try:
        return step()
    finally:
        timings[name] = round(time.perf_counter() - start, 2)
