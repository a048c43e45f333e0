"""``interp extract``: data -> model -> cache: the activations of every site under every
condition."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analyses.commands.command import Command, StepResult
from analyses.commands.inputs import load_step_model, step_images
from analyses.commands.options import _ExtractOptions, check_named, output_file
from analyses.files import OUTPUT_FILES
from analyses.outputs import (
    check_output_folder,
)
from caches import extract
from interp.errors import ConfigError
from interp.options import option
from interp.sources import ImageSet


@dataclass
class ExtractConfig(_ExtractOptions):
    """``interp extract``: the activations of the images at the sites, into ``out``."""

    out: str = option("output folder: writes OUT/cache.h5", default=".")

    def check(self) -> None:
        super().check()
        check_named(self.out, "out", "an output folder")
        self.cache_path()  # an old-style file path says so now

    def cache_path(self) -> Path:
        """The cache this extraction writes: ``out/cache.h5``."""
        return output_file(self.out, OUTPUT_FILES["cache"])


def extract_step(
    config: ExtractConfig,
    *,
    check: Callable[[Any, ImageSet], None] | None = None,
    loaded: Any | None = None,
) -> StepResult:
    """Load the model (unless ``loaded``), draw the stimuli or open the data, and write
    the cache ``config.out`` (resumed where unfinished, reused where finished with the
    same settings). ``check(loaded, data)``, if given, runs once the model is loaded and
    the images are drawn or opened, before anything is written (``interp run`` checks
    its probe settings and which of its steps can run there)."""
    path = config.cache_path()
    check_output_folder(path.parent)
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
    cache = extract(
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
    return StepResult(summary=f"cache of {len(data)} images: {cache.name}", paths={"cache": cache})


COMMAND = Command(
    name="extract",
    help="data -> model -> cache: the activations of every site under every condition",
    description="Writes the cache OUT (HDF5); resumes an unfinished one, reuses a finished one "
    "of the same settings.",
    config=ExtractConfig,
    step=extract_step,
)
