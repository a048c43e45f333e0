"""The one-command study: stimuli -> model -> cache -> probes -> layer-by-attribute map."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analyses.figures import layer_attribute_heatmap, redundancy_curves
from analyses.outputs import check_writable, write_figure, write_picture, write_table
from analyses.pictures import reconstruction_grid
from caches import DEFAULT_QUESTION, CacheReader, extract
from interp.errors import ConfigError
from interp.interventions import CONDITIONS
from interp.loading import load_model
from interp.options import option
from interp.organism import ORGANISM_NAME
from interp.stimuli import StimulusSpec, generate
from probes import ProbeSettings, pixel_sweep, sweep
from probes.selections import check_selection

__all__ = ["RunConfig", "RunResult", "run", "OUTPUT_FILES"]

OUTPUT_FILES = {
    "cache": "cache.h5",
    "probes": "probes.csv",
    "figure": "layer_attribute_map.html",
    "redundancy": "redundancy_curves.html",
    "pixels": "pixel_reconstruction.csv",
    "pixel_grid": "pixel_reconstructions.png",
}


@dataclass
class RunConfig:
    """Everything ``interp run`` does; the command line's options are these fields."""

    out: str = option("output folder", default="interp-results")
    model: str = option(
        "built-in name, local save_pretrained folder, or hub id",
        default=ORGANISM_NAME,
    )
    n_images: int = option("number of synthetic images", default=256)
    image_size: int | None = option(
        "stimulus side in px (default: the model's native input size)", default=None
    )
    image_sizes: list[int] | None = option(
        "mix image sides, e.g. 32 48 64 (image i gets side i mod their count); the cache "
        "then stores each image's own tokens, ragged",
        default=None,
    )
    seed: int = option("seed of stimuli, shuffling and folds", default=0)
    batch_size: int = option("images per forward pass", default=32)
    sites: list[str] | None = option(
        "sites to capture, e.g. vision.0 projector lm.3 (default: all)", default=None
    )
    conditions: list[str] | None = option(
        f"some of {' '.join(CONDITIONS)} (default: all the model supports)",
        default=None,
    )
    question: str = option("question put in the prompt", default=DEFAULT_QUESTION)
    selections: list[str] | None = option(
        "token selections: mean on_object off_object token random_<k> ... (default: all, "
        "k = 1, 8, 64, ... up to every token)",
        default=None,
    )
    ablation_selections: list[str] | None = option(
        "token selections under the ablation conditions (default: mean token; 'all' for "
        "the same as --selections)",
        default=None,
    )
    n_splits: int = option("cross-validation folds (grouped by image)", default=5)
    n_boot: int = option("bootstrap resamples of images for 95% intervals", default=1000)
    tokens_per_image: int = option(
        "most object tokens per image in the 'token' selection", default=4
    )
    dtype: str | None = option(
        "float32, float16 or bfloat16 (default: the checkpoint's)", default=None
    )
    device_map: str | None = option("e.g. cuda, auto (default: CPU)", default=None)
    local_files_only: bool = option("never reach the hub", default=False)
    overwrite: bool = option("replace existing outputs", default=False)
    progress: bool = option("show progress bars", default=True)

    def __post_init__(self) -> None:
        if self.n_images < 2 * self.n_splits:
            raise ConfigError(
                f"n_images={self.n_images} is too few for {self.n_splits}-fold probes; "
                f"use at least {2 * self.n_splits}"
            )
        if self.n_splits < 2:
            raise ConfigError(f"n_splits must be >= 2, got {self.n_splits}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.image_sizes is not None and self.image_size is not None:
            raise ConfigError(
                f"give image_size ({self.image_size}) or image_sizes ({self.image_sizes}), not both"
            )
        if self.n_boot < 1 or self.tokens_per_image < 1:
            raise ConfigError(
                f"n_boot and tokens_per_image must be >= 1, got {self.n_boot} and "
                f"{self.tokens_per_image}"
            )
        for selection in [*(self.selections or ()), *(self.ablation_selections or ())]:
            if selection != "all":
                check_selection(selection)
        unknown = [c for c in self.conditions or () if c not in CONDITIONS]
        if unknown:
            raise ConfigError(f"unknown conditions {unknown}; expected some of {CONDITIONS}")

    def probed_under_ablations(self) -> list[str] | None:
        """Selections under shuffle / lower_mask: ``mean`` and ``token`` unless asked
        otherwise (every selection under every condition multiplies the probing time)."""
        chosen = self.ablation_selections or ["mean", "token"]
        return None if "all" in chosen else chosen

    def paths(self) -> dict[str, Path]:
        return {key: Path(self.out) / name for key, name in OUTPUT_FILES.items()}

    def replace(self, **changes) -> RunConfig:
        return dataclasses.replace(self, **changes)


@dataclass
class RunResult:
    paths: dict[str, Path]
    table: pd.DataFrame  # the probe table (probes.csv)
    pixel_table: pd.DataFrame  # reconstruction error by depth (pixel_reconstruction.csv)


def run(config: RunConfig) -> RunResult:
    """Run the whole study; outputs appear only when complete (see :data:`OUTPUT_FILES`)."""
    paths = config.paths()
    check_writable(paths.values(), config.overwrite)
    loaded = load_model(
        config.model,
        dtype=config.dtype,
        device_map=config.device_map,
        local_files_only=config.local_files_only,
    )
    if config.image_sizes:
        spec = StimulusSpec(
            n_images=config.n_images, image_sizes=tuple(config.image_sizes), seed=config.seed
        )
    else:
        image_size = config.image_size or loaded.adapter.native_image_size
        spec = StimulusSpec(n_images=config.n_images, image_size=image_size, seed=config.seed)
    for side in spec.sizes:
        loaded.adapter.check_image_size(side)
    stimuli = generate(spec)
    # An unfinished cache from the same settings is resumed; from others, refused.
    extract(
        loaded,
        stimuli,
        paths["cache"],
        sites=config.sites,
        conditions=config.conditions,
        prompt=loaded.adapter.default_prompt(config.question),
        batch_size=config.batch_size,
        seed=config.seed,
        overwrite=config.overwrite,
        progress=config.progress,
    )
    settings = ProbeSettings(
        n_splits=config.n_splits,
        n_boot=config.n_boot,
        seed=config.seed,
        tokens_per_image=config.tokens_per_image,
    )
    with CacheReader(paths["cache"]) as reader:
        table = sweep(
            reader,
            selections=config.selections,
            ablation_selections=config.probed_under_ablations(),
            settings=settings,
            progress=config.progress,
        )
        pixel_table, shown = pixel_sweep(
            reader,
            n_splits=config.n_splits,
            seed=config.seed,
            n_boot=config.n_boot,
            progress=config.progress,
        )
    write_table(table, paths["probes"])
    write_figure(layer_attribute_heatmap(table, selection=_headline(table)), paths["figure"])
    if table["selection"].str.startswith("random_").any():
        write_figure(redundancy_curves(table), paths["redundancy"])
    else:  # not drawn this time: no stale figure from an earlier run beside the new table
        paths["redundancy"].unlink(missing_ok=True)
    write_table(pixel_table, paths["pixels"])
    write_picture(reconstruction_grid(shown), paths["pixel_grid"])
    written = {key: path for key, path in paths.items() if path.exists()}
    return RunResult(paths=written, table=table, pixel_table=pixel_table)


def _headline(table: pd.DataFrame) -> str:
    """The selection the layer map shows: ``mean`` when it was run."""
    selections = list(dict.fromkeys(table["selection"]))
    return "mean" if "mean" in selections else selections[0]
