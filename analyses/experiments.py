"""Two fine-tuning experiments on the built-in model, each one call (``interp experiment``).

1. **complexity** (the visual-redundancy study): fine-tune one start model at a low and at
   a high complexity level; measure the start and both results on the same held-out
   stimuli of every level: the spectra of each image's tokens by depth (effective rank,
   participation ratio, mean cosine), probe scores with ``k90`` and ``spread``, and answer
   accuracy. Does training on complex data change how much the model compresses?
2. **encoder** (the pixel-value study): fine-tune with the pixel-value task, once with the
   vision encoder frozen and once adapted; measure the pixel probe's reconstruction error
   by depth (and its pictures), the pixel task's answers and shape accuracy (on lone
   objects too). Are reconstructions sharper only when the encoder adapts?

Fine-tuned models are kept in ``OUT/models`` and reused by a rerun with the same recipe.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from analyses.files import EXPERIMENT_FILES, EXPERIMENT_RECORD
from analyses.outputs import (
    check_output_folder,
    write_atomic,
    write_figure,
    write_picture,
    write_table,
)
from analyses.pictures import reconstruction_grid
from analyses.redundancy import SPECTRAL_METRICS, probe_redundancy, redundancy_table
from interp.errors import ConfigError, OutputExistsError
from interp.options import Settings, option, renamed_options
from interp.organism import ORGANISM_NAME
from interp.stimuli import COMPLEXITY_LEVELS, StimulusSpec, generate
from probes.selections import check_selection

__all__ = [
    "ComplexityExperimentConfig",
    "EncoderExperimentConfig",
    "complexity_experiment",
    "complexity_grid",
    "encoder_experiment",
]

EXPERIMENT_SEED = 8_888  # held-out stimuli: no training step's seed, nor the card's
_SITES = ["vision.1", "vision.3", "projector", "lm.1", "lm.3", "lm.5"]
_SELECTIONS = ["mean", "on_object", "off_object", "random_1", "random_4", "random_16"]
_ATTRIBUTES = ["color", "shape", "size", "count"]


@dataclass
class _Experiment(Settings):
    out: str = option("output folder", default="experiment")
    start: str = option(
        "built-in name or save_pretrained folder to fine-tune from",
        aliases=("--from",),
        default=ORGANISM_NAME,
    )
    steps: int = option("fine-tuning steps of each model", default=300, minimum=1)
    batch_size: int = option("images per fine-tuning step", default=32, minimum=1)
    lr: float = option("peak learning rate of the fine-tuning", default=3e-4)
    n_images: int = option(
        "held-out images per measured set (at least 50, for 5-fold probes)", default=256, minimum=50
    )
    sites: list[str] | None = option(f"sites measured (default: {' '.join(_SITES)})", default=None)
    device_map: str = option(
        "where fine-tuning and measuring run: cpu, cuda or cuda:N", default="cpu"
    )
    seed: int = option("seed of fine-tuning and probes", default=0, minimum=0)
    overwrite: bool = option(
        "replace the tables and figures of an earlier run of this experiment (its fine-tuned "
        "models are reused where their recipe is the same)",
        default=False,
    )
    progress: bool = option("show progress bars", default=True)

    def check(self) -> None:
        self.sites = self.sites or list(_SITES)


@renamed_options(batch="batch_size", device="device_map")
@dataclass
class ComplexityExperimentConfig(_Experiment):
    """``interp experiment complexity``."""

    low: int = option("the low complexity level trained on", default=1, choices=COMPLEXITY_LEVELS)
    high: int = option("the high complexity level trained on", default=5, choices=COMPLEXITY_LEVELS)
    train_encoder: bool = option(
        "adapt the vision encoder too (default: frozen, so vision sites cannot change)",
        default=False,
    )
    levels: list[int] | None = option(
        "the held-out complexity levels measured (default: every one)",
        default=None,
        choices=COMPLEXITY_LEVELS,
    )
    attributes: list[str] | None = option(
        f"attributes probed (default: {' '.join(_ATTRIBUTES)})", default=None
    )
    selections: list[str] | None = option(
        f"token selections probed (default: {' '.join(_SELECTIONS)})", default=None
    )

    def check(self) -> None:
        super().check()
        self.levels = self.levels or list(COMPLEXITY_LEVELS)
        self.attributes = self.attributes or list(_ATTRIBUTES)
        self.selections = [check_selection(s) for s in self.selections or _SELECTIONS]
        if self.low >= self.high:
            raise ConfigError(f"need low < high, got low={self.low}, high={self.high}")


@renamed_options(batch="batch_size", device="device_map")
@dataclass
class EncoderExperimentConfig(_Experiment):
    """``interp experiment encoder``."""

    complexity: int = option(
        "complexity level trained and measured on", default=2, choices=COMPLEXITY_LEVELS
    )


def complexity_grid(per_level: int = 6, seed: int = 11) -> Any:
    """A picture of the dial: one column per complexity level, ``per_level`` images each."""
    columns = {
        f"level {level}": generate(
            StimulusSpec(n_images=per_level, seed=seed, complexity=level)
        ).images
        for level in COMPLEXITY_LEVELS
    }
    return reconstruction_grid(columns)


def _tuned(config: _Experiment, name: str, **recipe: Any) -> str:
    """The folder of a fine-tuned model: reused where a finished one has this recipe."""
    from interp.organism.build import finetune_organism
    from interp.organism.finetune import FinetuneConfig

    folder = Path(config.out) / "models" / name
    tune = FinetuneConfig(
        out=str(folder), start=config.start, steps=config.steps, batch_size=config.batch_size,
        lr=config.lr, seed=config.seed, device_map=config.device_map, progress=config.progress,
        eval_images=config.n_images, overwrite=True, **recipe,
    )  # fmt: skip
    record = folder / "finetune.json"
    finished = record.is_file() and (folder / "README.md").is_file()
    if finished and json.loads(record.read_text()).get("recipe") == tune.recipe():
        return str(folder)
    finetune_organism(tune)
    return str(folder)


def _load(source: str, config: _Experiment) -> Any:
    from interp.models.loading import load_model

    return load_model(source, device_map=None if config.device_map == "cpu" else config.device_map)


def _cache(
    loaded: Any, data: Any, path: Path, config: _Experiment, *, pixels: bool = False
) -> Path:
    from caches import extract

    return extract(
        loaded, data, path, sites=config.sites, conditions="baseline", store_dtype="float32",
        store_pixels=pixels, overwrite=True, progress=config.progress,
    )  # fmt: skip


def _with(table: pd.DataFrame, **columns: Any) -> pd.DataFrame:
    """``table`` with constant ``columns`` first."""
    return pd.concat(
        [
            pd.DataFrame({k: [v] * len(table) for k, v in columns.items()}),
            table.reset_index(drop=True),
        ],
        axis=1,
    )


def _prepare(config: _Experiment, kind: str) -> Path:
    """The experiment's folder, checked before any fine-tuning: the device is there, the
    sites are the start model's, the folder holds no other experiment, nor an earlier
    run of this one unless ``overwrite``; then marked as this experiment's."""
    from interp.models.loading import check_device_map, load_model

    check_device_map(config.device_map)
    adapter = load_model(config.start).adapter
    for site in config.sites or ():
        adapter.check_site(site)
    folder = check_output_folder(config.out)
    record = folder / EXPERIMENT_RECORD
    found = json.loads(record.read_text()).get("experiment") if record.is_file() else None
    if found not in (None, kind):
        raise OutputExistsError(
            f"{folder} holds the {found} experiment's outputs; give the {kind} experiment "
            f"its own out=FOLDER"
        )
    earlier = [folder / name for name in EXPERIMENT_FILES[kind] if (folder / name).exists()]
    if earlier and not config.overwrite:
        raise OutputExistsError(
            f"{folder} holds an earlier run of the {kind} experiment ({earlier[0].name}, ...); "
            f"pass overwrite=True to replace its tables (its fine-tuned models are reused "
            f"where their recipe is the same), or choose another out=FOLDER"
        )
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(record, lambda tmp: tmp.write_text(json.dumps({"experiment": kind})))
    return folder


def complexity_experiment(config: ComplexityExperimentConfig) -> dict[str, Path]:
    """Run experiment 1; returns the files written (tables, figures, the level grid)."""
    from caches import CacheReader
    from interp.organism.evaluation import evaluate
    from probes import ProbeSettings, sweep

    folder = _prepare(config, "complexity")
    models = {"start": config.start} | {
        f"tuned at {level}": _tuned(
            config, f"level{level}", complexity=level, train_encoder=config.train_encoder
        )
        for level in (config.low, config.high)
    }
    spectra, probes, answers = [], [], []
    for name, source in models.items():
        loaded = _load(source, config)
        for level in config.levels:
            spec = StimulusSpec(n_images=config.n_images, seed=EXPERIMENT_SEED, complexity=level)
            data = generate(spec)
            path = _cache(
                loaded, data, folder / "caches" / f"{_slug(name)}_level{level}.h5", config
            )
            with CacheReader(path) as reader:
                spectra.append(_with(redundancy_table(reader, n_boot=200), model=name, level=level))
                table = sweep(
                    reader, sites=config.sites, attributes=config.attributes,
                    selections=config.selections, settings=ProbeSettings(seed=config.seed),
                    progress=config.progress,
                )  # fmt: skip
            probes.append(_with(table, model=name, level=level))
            spectra.append(_with(probe_redundancy(table), model=name, level=level))
            scored = evaluate(
                loaded, n_images=config.n_images, seed=EXPERIMENT_SEED, complexity=level
            )
            answers.append(_with(scored, model=name, level=level))
            path.unlink()  # caches are large and cheap to remake
    paths = {
        "redundancy": folder / "redundancy.csv",
        "probes": folder / "probes.csv",
        "answers": folder / "answers.csv",
        "compression": folder / "compression_by_depth.html",
        "accuracy": folder / "accuracy_by_level.html",
        "levels": folder / "complexity_levels.png",
    }
    redundancy = pd.concat(spectra, ignore_index=True)
    accuracy = pd.concat(answers, ignore_index=True)
    write_table(redundancy, paths["redundancy"])
    write_table(pd.concat(probes, ignore_index=True), paths["probes"])
    write_table(accuracy, paths["answers"])
    write_figure(compression_figure(redundancy), paths["compression"])
    write_figure(accuracy_figure(accuracy), paths["accuracy"])
    write_picture(complexity_grid(), paths["levels"])
    _drop_empty(folder / "caches")
    return paths


def encoder_experiment(config: EncoderExperimentConfig) -> dict[str, Path]:
    """Run experiment 2; returns the files written (tables, figure, picture grids)."""
    from caches import CacheReader
    from interp.organism.evaluation import evaluate
    from interp.organism.finetune import evaluate_pixels
    from probes import pixel_sweep

    folder = _prepare(config, "encoder")
    common = {"complexity": config.complexity, "pixel_task": True}
    models = {
        "start": config.start,
        "encoder frozen": _tuned(config, "frozen", **common, train_encoder=False),
        "encoder adapted": _tuned(config, "adapted", **common, train_encoder=True),
    }
    drawn = {"n_images": config.n_images, "seed": EXPERIMENT_SEED}
    data = generate(StimulusSpec(**drawn, complexity=config.complexity))
    pixels, answers, paths = [], [], {}
    for name, source in models.items():
        loaded = _load(source, config)
        path = _cache(loaded, data, folder / "caches" / f"{_slug(name)}.h5", config, pixels=True)
        with CacheReader(path) as reader:
            table, shown = pixel_sweep(
                reader, sites=config.sites, seed=config.seed, n_boot=200, progress=config.progress
            )
        pixels.append(_with(table, model=name))
        key = f"pictures {name}"
        paths[key] = folder / f"reconstructions_{_slug(name)}.png"
        write_picture(reconstruction_grid(shown), paths[key])
        for images, counts in (
            (f"complexity {config.complexity}", {"complexity": config.complexity}),
            ("lone objects", {"max_objects": 1}),
        ):
            scored = evaluate(loaded, **drawn, **counts)
            if name != "start":  # the start model was never asked for pixel values
                row = evaluate_pixels(
                    loaded, n_images=config.n_images, seed=EXPERIMENT_SEED,
                    complexity=counts.get("complexity", 1),
                )  # fmt: skip
                scored = pd.concat([scored, pd.DataFrame([row])], ignore_index=True)
            answers.append(_with(scored, model=name, images=images))
        path.unlink()
    paths.update(
        {
            "pixels": folder / "pixels.csv",
            "answers": folder / "answers.csv",
            "pixel_error": folder / "pixel_error_by_depth.html",
        }
    )
    pixel_table = pd.concat(pixels, ignore_index=True)
    write_table(pixel_table, paths["pixels"])
    write_table(pd.concat(answers, ignore_index=True), paths["answers"])
    write_figure(pixel_error_figure(pixel_table), paths["pixel_error"])
    _drop_empty(folder / "caches")
    return paths


def _drop_empty(folder: Path) -> None:
    """Remove the caches' folder once its caches are gone (a user's own files stay)."""
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def _slug(name: str) -> str:
    return name.replace(" ", "_")


def _lines(
    fig: go.Figure, frame: pd.DataFrame, x: str, y: str, *, row: int, col: int, first: bool
) -> None:
    """One line per model, in the palette's order."""
    from analyses.theme import PALETTE

    for k, (model, part) in enumerate(frame.groupby("model", sort=False)):
        fig.add_trace(
            go.Scatter(
                x=list(part[x]), y=list(part[y]), mode="lines+markers", name=model,
                legendgroup=model, showlegend=first, line={"color": PALETTE[k % len(PALETTE)]},
            ),
            row=row, col=col,
        )  # fmt: skip


def compression_figure(table: pd.DataFrame) -> go.Figure:
    """Effective rank against depth, one panel per held-out complexity level, a line per
    model (a :func:`complexity_experiment` ``redundancy.csv``)."""
    from plotly.subplots import make_subplots

    from analyses.theme import apply_theme
    from interp.sites import sort_sites

    rows = table[table["metric"] == SPECTRAL_METRICS[0]]
    levels = sorted(set(rows["level"]))
    fig = make_subplots(rows=1, cols=len(levels), subplot_titles=[f"level {v}" for v in levels])
    for col, level in enumerate(levels, start=1):
        part = rows[rows["level"] == level].copy()
        order = {site: k for k, site in enumerate(sort_sites(list(set(part["site"]))))}
        part = part.sort_values("site", key=lambda s: s.map(order))
        _lines(fig, part, "site", "value", row=1, col=col, first=col == 1)
    apply_theme(fig, columns=2, height_pt=180)
    fig.update_layout(title="Effective rank of each image's tokens, by depth and held-out level")
    return fig


def accuracy_figure(table: pd.DataFrame) -> go.Figure:
    """Answer accuracy against held-out complexity level, one panel per question type."""
    from plotly.subplots import make_subplots

    from analyses.theme import apply_theme

    kinds = list(dict.fromkeys(table["question"]))
    fig = make_subplots(rows=1, cols=len(kinds), subplot_titles=kinds)
    for col, kind in enumerate(kinds, start=1):
        part = table[table["question"] == kind]
        _lines(fig, part, "level", "accuracy", row=1, col=col, first=col == 1)
    apply_theme(fig, columns=2, height_pt=180)
    fig.update_layout(title="Answer accuracy by held-out complexity level")
    return fig


def pixel_error_figure(table: pd.DataFrame) -> go.Figure:
    """The pixel probe's mean absolute error (0-255) by depth, a line per model."""
    from plotly.subplots import make_subplots

    from analyses.theme import apply_theme
    from interp.sites import sort_sites

    rows = table[table["metric"] == "mae"].copy()
    order = {site: k for k, site in enumerate(sort_sites(list(set(rows["site"]))))}
    rows = rows.sort_values("site", key=lambda s: s.map(order), kind="stable")
    fig = make_subplots(rows=1, cols=1)
    _lines(fig, rows, "site", "value", row=1, col=1, first=True)
    apply_theme(fig, columns=1, height_pt=200)
    fig.update_layout(
        title="Pixel probe: held-out reconstruction error by depth",
        yaxis_title="mean absolute error (0-255)",
    )
    return fig
