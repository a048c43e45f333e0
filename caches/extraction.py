"""Stimuli -> model -> cache: capture every site under every condition, batch by batch."""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from tqdm.auto import tqdm

from caches.schema import BASELINE
from caches.writer import CacheWriter
from interp.capture import capture_tokens
from interp.errors import ConfigError
from interp.interventions import CONDITIONS, make_intervention
from interp.loading import LoadedModel
from interp.sites import sort_sites
from interp.stimuli import Stimuli

__all__ = ["extract", "DEFAULT_QUESTION", "toolkit_version"]

DEFAULT_QUESTION = "Describe the image."


def toolkit_version() -> str:
    try:
        return version("vlm-interp")
    except PackageNotFoundError:  # running from a source tree
        return "0+unknown"


def extract(
    loaded: LoadedModel,
    stimuli: Stimuli,
    path: str | os.PathLike,
    *,
    sites: Sequence[str] | None = None,
    conditions: Sequence[str] | None = None,
    prompt: str | None = None,
    batch_size: int = 32,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write ``path`` (HDF5) with the activations of ``stimuli`` at ``sites``.

    ``conditions`` default to all the model's family supports (baseline first).
    Holds at most one batch of activations in memory. An unfinished ``<path>.partial``
    made with the same settings is resumed; the cache appears at ``path`` only when done.
    """
    adapter = loaded.adapter
    adapter.check_image_size(stimuli.spec.image_size)
    sites = sort_sites([adapter.check_site(s) for s in (sites or adapter.sites())])
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    conditions = list(dict.fromkeys([BASELINE, *(conditions or adapter.conditions)]))
    unsupported = [c for c in conditions if c in CONDITIONS and c not in adapter.conditions]
    if unsupported:
        raise ConfigError(
            f"a {adapter.family} model supports the conditions {list(adapter.conditions)}, "
            f"not {unsupported}; leave --conditions out to run all it supports"
        )
    interventions = {c: make_intervention(c, seed=seed) for c in conditions}
    prompt = prompt if prompt is not None else adapter.default_prompt(DEFAULT_QUESTION)
    size = stimuli.spec.image_size
    layouts = {site: adapter.token_layout(site, size) for site in sites}
    attrs = {
        "toolkit_version": toolkit_version(),
        "model": loaded.source,
        "model_family": adapter.family,
        "prompt": prompt,
        "stimuli": stimuli.spec.to_dict(),
        "sites": sites,
        "conditions": conditions,
        "patch_grid": list(adapter.patch_grid),
        "vision_tokens": (
            "acts/ holds the patch tokens of each site (layout/<site>); tokens that carry no "
            "patch (CLS, registers, newlines) are in extra/<condition>/<site>"
        ),
    }
    with CacheWriter(path, attrs, overwrite=overwrite) as writer:
        writer.write_static(
            stimuli.images,
            stimuli.object_map,
            stimuli.labels,
            stimuli.label_classes,
            layouts,
            stimuli.object_labels(),
        )
        for condition, intervention in interventions.items():
            if intervention is not None:
                writer.describe_condition(condition, intervention.describe(adapter, size))
        n = len(stimuli)
        bar = tqdm(total=n, initial=writer.n_written, unit="img", disable=not progress)
        with bar:
            for start in range(writer.n_written, n, batch_size):
                images = stimuli.images[start : start + batch_size]  # (batch, H, W, 3)
                captured = {
                    condition: capture_tokens(
                        loaded, images, sites, prompt=prompt, intervention=intervention
                    )
                    for condition, intervention in interventions.items()
                }
                writer.write_batch(
                    start,
                    {condition: c.acts for condition, c in captured.items()},
                    {condition: c.extra for condition, c in captured.items()},
                )
                bar.update(len(images))
        return writer.finalize()
