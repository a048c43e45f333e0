"""The model and the images a step's settings name: loaded, drawn or opened, and checked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from analyses.commands.options import _Images
from interp.errors import ConfigError
from interp.organism import ORGANISM_NAME
from interp.sources import ImageSet


def load_step_model(config: Any, **options: Any) -> Any:
    """The model a step's settings name, loaded (``model``, ``dtype``, ``device_map``,
    ``local_files_only``; ``options`` go to :func:`interp.load_model`)."""
    from interp.models.loading import load_model

    return load_model(
        config.model or ORGANISM_NAME,
        dtype=config.dtype,
        device_map=config.device_map,
        local_files_only=config.local_files_only,
        **options,
    )


def step_images(
    config: _Images, loaded: Any, data: ImageSet | None
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


def cache_images(attrs: dict[str, Any], cache: str | Path) -> ImageSet:
    """The images a cache was extracted from, by what its attributes (``attrs``) say: the
    built-in stimuli drawn again from their spec, or own data opened again at its path."""
    from interp.sources import open_source
    from interp.stimuli import StimulusSpec, generate

    origin = attrs.get("data") or {}
    if origin.get("source") == "stimuli" or (not origin and attrs.get("stimuli")):
        spec = dict(origin.get("spec") or attrs["stimuli"])
        spec = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()}
        return generate(StimulusSpec(**spec))
    if "path" in origin:
        return open_source(origin["path"], attributes=origin.get("attributes"))
    raise ConfigError(
        f"the cache {str(cache)!r} does not say where its images came from; pass the "
        f"data itself (data=...)"
    )
