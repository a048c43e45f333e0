"""The one-command study: stimuli -> model -> cache -> probes -> layer-by-attribute map."""

from __future__ import annotations

import dataclasses
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analyses.figures import layer_attribute_heatmap, redundancy_curves
from analyses.outputs import (
    check_output_folder,
    check_writable,
    publish,
    remove_outputs,
    write_figure,
    write_picture,
    write_table,
)
from analyses.pictures import reconstruction_grid
from caches import DEFAULT_QUESTION, CacheReader, extract
from caches.schema import STORE_DTYPES
from interp.errors import ConfigError
from interp.interventions import CONDITIONS
from interp.loading import load_model
from interp.names import as_names
from interp.options import option
from interp.organism import ORGANISM_NAME
from interp.sources import HuggingFaceImages, ImageSet, open_source
from interp.stimuli import StimulusSpec, generate
from probes import ProbeSettings, pixel_sweep, sweep
from probes.pixels import PIXEL_INNER_FOLDS
from probes.selections import check_selection, check_selection_fits

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
    data: str | ImageSet | None = option(
        "your own images: a folder holding labels.csv, labels.jsonl or labels.parquet (or "
        "the table's path), a datasets save_to_disk folder or an imagefolder with "
        "metadata.jsonl (in Python also an ImageSet or a datasets.Dataset); default: the "
        "built-in synthetic stimuli",
        default=None,
    )
    image_column: str | None = option(
        "with a Hugging Face dataset: the column of images (default: image)", default=None
    )
    attributes: list[str] | None = option(
        "attributes to probe (default: every label; with --data, every attribute column; "
        "--label-columns is the same flag, as a datasets user would name it)",
        aliases=("--label-columns",),
        default=None,
    )
    categorical: list[str] | None = option(
        "with --data: numeric-looking columns to treat as classes", default=None
    )
    n_images: int | None = option(
        "number of images (default: 256 synthetic ones; with --data, every row, or the first N)",
        default=None,
    )
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
    workers: int = option(
        "processes that decode the next batches of --data images while the model runs",
        default=0,
    )
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
    store_dtype: str | None = option(
        "how activations are stored: float16 (half the disk) or float32 (activations beyond "
        "float16's range) (default: the family's: float16, float32 for Gemma 3)",
        default=None,
    )
    store_pixels: bool | None = option(
        "keep the images in the cache (the pixel probe needs them) (default: yes for the "
        "synthetic stimuli, no for --data, whose images stay where they are)",
        default=None,
    )
    allow_nonfinite: bool = option(
        "store NaN/inf activations (counted per site) instead of stopping; probes still "
        "refuse them",
        default=False,
    )
    local_files_only: bool = option("never reach the hub", default=False)
    overwrite: bool = option("replace existing outputs", default=False)
    progress: bool = option("show progress bars", default=True)

    def __post_init__(self) -> None:
        names = ("sites", "conditions", "selections", "ablation_selections", "attributes")
        for name in (*names, "categorical", "image_sizes"):
            value = getattr(self, name)
            if name == "image_sizes":
                value = [value] if isinstance(value, int) else value
            else:
                value = as_names(value, name)
            setattr(self, name, None if value is None else list(value))
        if not str(self.out).strip():
            raise ConfigError("out must name an output folder, got an empty string")
        if self.n_splits < 2:
            raise ConfigError(f"n_splits must be >= 2, got {self.n_splits}")
        if self.n_images is not None:
            self.check_image_count(self.n_images)
        if self.data is not None and (self.image_size or self.image_sizes):
            raise ConfigError(
                "image_size and image_sizes draw the synthetic stimuli; with data the images "
                "keep their own sizes: leave them out"
            )
        if self.categorical and self.data is None:
            raise ConfigError("categorical names columns of a label table: it needs data")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.workers < 0:
            raise ConfigError(f"workers must be >= 0, got {self.workers}")
        if self.image_sizes is not None and self.image_size is not None:
            raise ConfigError(
                f"give image_size ({self.image_size}) or image_sizes ({self.image_sizes}), not both"
            )
        for name in ("image_size", "image_sizes"):
            given = getattr(self, name)
            sides = [given] if isinstance(given, int) else given or []
            if any(side < 1 for side in sides) or (name == "image_sizes" and given == []):
                raise ConfigError(
                    f"{name} must be positive sides in px, got {given}; leave it out for the "
                    f"model's native size"
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
        if self.store_dtype is not None and self.store_dtype not in STORE_DTYPES:
            raise ConfigError(
                f"store_dtype must be one of {', '.join(STORE_DTYPES)}, got {self.store_dtype!r}"
            )

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
        """The user's data source (None for the built-in stimuli), opened and checked."""
        if self.data is None:
            return None
        options = {"attributes": self.attributes, "categorical": self.categorical}
        options["n_images"] = self.n_images
        if self.image_column is not None:
            options["image_column"] = self.image_column
        if isinstance(self.data, ImageSet):
            data = self.data
        elif isinstance(self.data, (str, os.PathLike)):
            data = open_source(self.data, **options)
        else:  # a datasets.Dataset
            options["label_columns"] = options.pop("attributes")
            data = HuggingFaceImages(self.data, **options)
        self.check_image_count(len(data))
        return data

    def keeps_pixels(self) -> bool:
        """``store_pixels``, where given; else yes for the stimuli, no for own data."""
        return self.store_pixels if self.store_pixels is not None else self.data is None

    def fewest_images(self) -> int:
        """The fewest images every probe of the run can cross-validate: the pixel probe's
        ``n_splits x PIXEL_INNER_FOLDS`` blocks (which also leaves each outer training fold
        enough images for the classifiers' inner folds)."""
        return max(2, self.n_splits * PIXEL_INNER_FOLDS, self.n_splits * ProbeSettings().n_inner)

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
    pixel_table: pd.DataFrame | None  # reconstruction error by depth; None without pixels


def run(config: RunConfig) -> RunResult:
    """Run the whole study; outputs appear only when complete (see :data:`OUTPUT_FILES`).

    Everything that can be checked before work is checked first (the output folder is
    writable, the device exists, the settings fit the model), before any file is written.
    A finished cache of the same settings in the output folder is reused (a run stopped
    while probing continues from it); with ``overwrite`` the outputs of an earlier run are
    removed first (and said so), the cache replaced only by a finished one.
    """
    paths = config.paths()
    folder = Path(config.out)
    derived = [path for key, path in paths.items() if key != "cache"]
    check_writable(derived, config.overwrite)
    check_output_folder(folder)
    data = config.open_data()  # a label table is read and checked before the model loads
    loaded = load_model(
        config.model,
        dtype=config.dtype,
        device_map=config.device_map,
        local_files_only=config.local_files_only,
    )
    if data is None:
        n_images = config.n_images or 256
        if config.image_sizes:
            spec = StimulusSpec(
                n_images=n_images, image_sizes=tuple(config.image_sizes), seed=config.seed
            )
        else:
            image_size = config.image_size or loaded.adapter.native_image_size
            spec = StimulusSpec(n_images=n_images, image_size=image_size, seed=config.seed)
    if data is None:  # stimuli are drawn so that every patch is whole stimulus pixels
        for side in spec.sizes:
            loaded.adapter.check_image_size(side)
    shapes = data.distinct_sizes if data is not None else [(s, s) for s in spec.sizes]
    sites = [loaded.adapter.check_site(s) for s in config.sites or loaded.adapter.sites()]
    for site in sites:  # every random_<k> must fit every site at every image size
        fewest = min(len(loaded.adapter.token_layout(site, hw)) for hw in shapes)
        for selection in [*(config.selections or ()), *(config.ablation_selections or ())]:
            if selection != "all":
                check_selection_fits(selection, fewest, f"at site {site!r}")
    if loaded.adapter.has_language_model:
        token = loaded.adapter.prompt_image_token
        if token in config.question:
            raise ConfigError(
                f"question must not hold the image token {token!r} (the prompt puts the "
                f"image before the question), got {config.question!r}; leave it out"
            )
    prompt = loaded.adapter.default_prompt(config.question)
    loaded.adapter.check_prompt(prompt)
    data = data if data is not None else generate(spec)
    unknown = [a for a in config.attributes or () if a not in data.labels]
    if unknown:
        raise ConfigError(
            f"attributes {unknown} are not labels of the data; its labels: {', '.join(data.labels)}"
        )
    if config.overwrite:
        remove_outputs(derived, "the outputs of an earlier run (overwrite)")
    staging = folder / ".run.partial"
    shutil.rmtree(staging, ignore_errors=True)  # left by a run stopped while publishing
    # A finished cache of the same settings is reused, an unfinished one resumed; one of
    # other settings is refused unless overwrite.
    extract(
        loaded,
        data,
        paths["cache"],
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
    settings = ProbeSettings(
        n_splits=config.n_splits,
        n_boot=config.n_boot,
        seed=config.seed,
        tokens_per_image=config.tokens_per_image,
    )
    with CacheReader(paths["cache"]) as reader:
        table = sweep(
            reader,
            attributes=config.attributes,
            selections=config.selections,
            ablation_selections=config.probed_under_ablations(),
            settings=settings,
            progress=config.progress,
        )
        pixel_table, shown = None, None
        if reader.has_pixels:
            pixel_table, shown = pixel_sweep(
                reader,
                n_splits=config.n_splits,
                seed=config.seed,
                n_boot=config.n_boot,
                progress=config.progress,
            )
        else:
            warnings.warn(
                "no pixel probe: the cache holds no pixels (pass --store-pixels to keep them)",
                stacklevel=2,
            )
    # Every result is written apart, then moved in together: an interrupted run never
    # leaves some of this run's tables beside another's.
    staged = {key: staging / path.name for key, path in paths.items()}
    write_table(table, staged["probes"])
    write_figure(layer_attribute_heatmap(table, selection=_headline(table)), staged["figure"])
    if table["selection"].str.startswith("random_").any():
        write_figure(redundancy_curves(table), staged["redundancy"])
    if pixel_table is not None:
        write_table(pixel_table, staged["pixels"])
        write_picture(reconstruction_grid(shown), staged["pixel_grid"])
    publish(staging, folder)
    written = {key: path for key, path in paths.items() if path.exists()}
    return RunResult(paths=written, table=table, pixel_table=pixel_table)


def _headline(table: pd.DataFrame) -> str:
    """The selection the layer map shows: ``mean`` when it was run."""
    selections = list(dict.fromkeys(table["selection"]))
    return "mean" if "mean" in selections else selections[0]
