"""Stimuli -> model -> cache: capture every site under every condition, batch by batch."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from tqdm.auto import tqdm

from caches.background import BackgroundWriter
from caches.batches import Batch, decoded_batches
from caches.encoding import stored_dtype
from caches.memory import MemoryCache
from caches.parts import PART_ATTR, part_path, publish_parts, rank_files
from caches.reader import CacheReader
from caches.schema import BASELINE, BFLOAT16, COMPRESSIONS, STORE_DTYPES
from caches.tokens import SiteTokens
from caches.writer import (
    METADATA_ROOM,
    CacheWriter,
    SiteValues,
    encode_attr,
    first_difference,
    human_bytes,
    partial_path,
    short_repr,
    storable,
    with_defaults,
)
from interp.errors import ConfigError, DiskFullError, OutputExistsError
from interp.experiments.answers import prepare
from interp.experiments.interventions import (
    BatchContext,
    Intervention,
    check_conditions,
    make_intervention,
)
from interp.layout import TokenLayout
from interp.models.loading import LoadedModel
from interp.models.tracing import capture_tokens
from interp.names import as_names
from interp.ranks import Part
from interp.sites import sort_sites
from interp.sources import ImageSet

__all__ = ["extract", "capture_set", "reusable", "DEFAULT_QUESTION", "toolkit_version"]

DEFAULT_QUESTION = "Describe the image."
log = logging.getLogger("interp")


def toolkit_version() -> str:
    try:
        return version("vlm-interp")
    except PackageNotFoundError:  # running from a source tree
        return "0+unknown"


def extract(
    loaded: LoadedModel,
    data: ImageSet,
    path: str | os.PathLike,
    *,
    sites: str | Sequence[str] | None = None,
    conditions: str | Sequence[str] | None = None,
    prompt: str | None = None,
    batch_size: int = 32,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    store_dtype: str | None = None,
    allow_nonfinite: bool = False,
    store_pixels: bool = True,
    workers: int = 0,
    compression: str = "none",
    part: Part | None = None,
) -> Path:
    """Write ``path`` (HDF5) with the activations of the images of ``data`` (the built-in
    stimuli or any :class:`interp.sources.ImageSet`) at ``sites``.

    ``conditions`` default to all the model's family supports (baseline first).
    Holds at most a few batches of activations in memory: each batch is written by a
    background thread while the next one is captured (an error there stops the
    extraction here, and the file stays resumable). An unfinished ``<path>.partial``
    made with the same settings is resumed; the cache appears at ``path`` only when done.
    A finished cache at ``path`` made with the same settings (data, model weights and
    processor, dtype, prompt, sites, conditions, storage) is reused as it is; one made
    with others is refused unless ``overwrite``.

    Activations are stored as ``store_dtype`` (float16, bfloat16 or float32; default:
    the model's own where it is float16 or bfloat16, else the family's,
    ``adapter.store_dtype``, float16 but for Gemma 3), converted once on the model's
    device (no float32 detour; bfloat16 is stored as its raw bits and reads back as
    float32 exactly, see :mod:`caches.encoding`); a value that is not
    finite there (NaN, inf, beyond float16's range) stops the extraction with the site and
    count, unless ``allow_nonfinite`` (then each dataset counts them in its ``nonfinite``
    attribute, and probes still refuse them).

    ``compression`` compresses the activation datasets (``lzf``: fast; ``gzip``: level
    1, smaller and slower; readers decompress without being told; README, "Extraction
    speed", gives the measured sizes and times). ``workers`` processes decode and
    preprocess the next batches while the model runs (0: in this process; each batch
    goes through the processor once, whatever the number of conditions).
    ``store_pixels=False`` keeps the images out of the cache (their object maps, sizes
    and labels stay; the pixel probe then has nothing to reconstruct).

    Everything that can fail before a file is written is checked first: the first batch
    to write is captured before the file is created, and the disk must hold the cache's
    expected size.

    Stimuli of mixed sizes give a layout per image, so every site is stored ragged (flat
    tokens plus per-image offsets); each batch runs one forward pass per size in it.

    Started by ``torchrun`` (``part``: default :meth:`interp.ranks.Part.from_env`), each
    rank extracts a contiguous run of whole batches into its own ``<stem>.rank<r>.h5``
    beside ``path`` (resumable and published on its own), and after a barrier rank 0
    publishes ``path`` as one cache of virtual datasets over the rank files, which must
    stay beside it (:mod:`caches.parts`); every rank returns ``path``.
    """
    adapter = loaded.adapter
    sites = as_names(sites, "sites")
    sites = sort_sites([adapter.check_site(s) for s in (sites or adapter.sites())])
    if batch_size < 1 or workers < 0:
        raise ConfigError(
            f"batch_size must be >= 1 and workers >= 0, got {batch_size} and {workers}"
        )
    store_dtype = store_dtype or default_store_dtype(loaded)
    if store_dtype not in STORE_DTYPES:
        raise ConfigError(f"store_dtype must be one of {STORE_DTYPES}, got {store_dtype!r}")
    # Recordings are converted once: on the model's device where that cannot overflow
    # (to as wide a range), else by the writer, which then tells overflow from NaN.
    dtype: torch.dtype | None = getattr(torch, store_dtype)
    if torch.finfo(dtype).max < torch.finfo(loaded.dtype).max:
        dtype = None
    if compression not in COMPRESSIONS:
        raise ConfigError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")
    conditions = as_names(conditions, "conditions") or adapter.conditions
    conditions = list(dict.fromkeys([BASELINE, *conditions]))
    conditions = check_conditions(conditions, adapter, data.distinct_sizes)
    interventions = {c: make_intervention(c, seed=seed) for c in conditions}
    prompt = prompt if prompt is not None else adapter.default_prompt(DEFAULT_QUESTION)
    prepare(interventions, loaded, data, prompt, batch_size)
    shapes = data.distinct_sizes  # (height, width) of the set's images
    by_size = {hw: {site: adapter.token_layout(site, hw) for site in sites} for hw in shapes}
    sizes = data.sizes  # (n, 2) (height, width) of each image
    if len(shapes) == 1:
        layouts = by_size[shapes[0]]
    else:  # one layout per image: ragged
        layouts = {site: [by_size[(int(h), int(w))][site] for h, w in sizes] for site in sites}
    origin = data.describe()  # where the images came from
    attrs = {
        "toolkit_version": toolkit_version(),
        "model": loaded.source,
        "weights_id": loaded.identity.get("weights", "unknown"),
        "processor_id": loaded.identity.get("processor", "unknown"),
        "dtype": loaded.dtype_name,
        "model_family": adapter.family,
        "prompt": prompt,
        "stimuli": origin.get("spec", {}),
        "data": origin,
        "sites": sites,
        "conditions": conditions,
        "patch_grid": list(adapter.patch_grid),
        "store_dtype": store_dtype,
        "pixels": bool(store_pixels),
        "compression": compression,
        "vision_tokens": (
            "acts/ holds the patch tokens of each site (layout/<site>); tokens that carry no "
            "patch (CLS, registers, newlines) are in extra/<condition>/<site>"
        ),
    }
    settings = _Settings(
        sites=sites,
        prompt=prompt,
        interventions=interventions,
        layouts=layouts,
        shapes=shapes,
        batch_size=batch_size,
        workers=workers,
        dtype=dtype,
        store_dtype=store_dtype,
        store_pixels=bool(store_pixels),
        allow_nonfinite=allow_nonfinite,
        progress=progress,
    )
    n = len(data)
    path = Path(path)
    if path.exists() and not overwrite and reusable(path, attrs):
        log.info("reusing the finished cache %s: it was made with the same settings", path)
        return path
    part = Part.from_env() if part is None else part
    if not part.parallel:
        _check_no_rank_files(path, overwrite)
        return _write_images(loaded, data, path, attrs, 0, len(data), settings, overwrite)
    # One of several ranks: its run of batches into its own rank file, then one cache.
    own, own_attrs = part_path(path, part.rank), {**attrs, PART_ATTR: part.describe(n, batch_size)}
    start, stop = part.images(n, batch_size)
    finished = own.exists() and not overwrite and reusable(own, own_attrs)
    if start < stop and not finished:
        _write_images(loaded, data, own, own_attrs, start, stop, settings, overwrite)
    part.barrier()
    if part.rank == 0:
        ranks = [Part(r, part.ranks) for r in range(part.ranks)]
        files = [part_path(path, p.rank) for p in ranks if p.images(n, batch_size)[0] < n]
        publish_parts(path, files, {k: encode_attr(v) for k, v in with_defaults(attrs).items()})
        log.info("published %s over the rank files %s", path, ", ".join(f.name for f in files))
    part.barrier(last=True)
    return path


def _check_no_rank_files(path: Path, overwrite: bool) -> None:
    """One process over the rank files of an unfinished data-parallel extraction of the
    same cache: refused (the images would be extracted twice and the rank files left
    stale), unless ``overwrite`` (then they are removed)."""
    found = rank_files(path)
    if not found or path.exists():
        return
    if overwrite:
        for stale in found:
            stale.unlink()
        log.warning("removed the rank files of an earlier data-parallel extraction (overwrite)")
        return
    raise OutputExistsError(
        f"{path.parent} holds the rank files of an unfinished data-parallel extraction of "
        f"{path.name} ({', '.join(f.name for f in found)}); rerun it with the same torchrun "
        f"command and number of ranks to finish it, or pass overwrite=True to extract it "
        f"in this one process instead (the rank files are removed)"
    )


@dataclass(frozen=True)
class _Settings:
    """What every batch of an extraction is captured and stored with."""

    sites: list[str]
    prompt: str
    interventions: dict[str, Intervention | None]
    layouts: dict[str, TokenLayout | list[TokenLayout]]
    shapes: list[tuple[int, int]]
    batch_size: int
    workers: int
    dtype: torch.dtype | None
    store_dtype: str
    store_pixels: bool
    allow_nonfinite: bool
    progress: bool


def _write_images(
    loaded: LoadedModel,
    data: ImageSet,
    path: Path,
    attrs: dict,
    lo: int,
    hi: int,
    settings: _Settings,
    overwrite: bool,
) -> Path:
    """Extract the images ``lo..hi-1`` of ``data`` into the cache ``path`` (resumed where
    its unfinished file has the same ``attrs``)."""
    adapter = loaded.adapter
    sizes = data.sizes  # (n, 2) (height, width) of each image
    n = hi - lo
    layouts = {
        site: layout if isinstance(layout, TokenLayout) else layout[lo:hi]
        for site, layout in settings.layouts.items()
    }

    def captured(batch: Batch) -> tuple[dict[str, tuple[dict, dict]], np.ndarray, np.ndarray]:
        """Per condition the (acts, extra) of a decoded batch as they go into the file,
        and its pixels and maps: converted and checked here, while the writer thread
        writes the previous batch; known finite without a pass over them where the
        capture's value ranges (reduced on the model's device) say so."""
        start, pixels, maps, inputs = batch  # (batch, *canvas, 3), (batch, *canvas)
        batch_sizes = sizes[start : start + len(pixels)]
        found = {}
        for condition, intervention in settings.interventions.items():
            *trees, ranges = _capture_batch(
                loaded,
                start,
                pixels,
                maps,
                batch_sizes,
                settings.sites,
                settings.prompt,
                intervention,
                settings.dtype,
                inputs,
            )
            found[condition] = tuple(
                {
                    site: storable(
                        values,
                        settings.store_dtype,
                        site,
                        condition,
                        start,
                        settings.allow_nonfinite,
                        ranges.get(f"{kind}/{site}"),
                    )
                    for site, values in tree.items()
                }
                for kind, tree in zip(("acts", "extra"), trees, strict=True)
            )
        return found, pixels, maps

    def batches(first: int) -> Iterator[Batch]:
        prepare = _Preprocess(adapter, settings.prompt, sizes)  # once per batch, not condition
        return decoded_batches(
            data, first, settings.batch_size, settings.workers, stop=hi, prepare=prepare
        )

    first_start = lo + _resume_point(partial_path(path), attrs)
    if first_start > lo:
        log.info("resuming the unfinished %s at image %d", partial_path(path).name, first_start)
    stream = batches(first_start)
    first = None
    if first_start < hi:  # the first batch is captured and checked before any file exists
        first = captured(next(stream))
        per_image = int(np.prod(data.canvas)) * (4 if settings.store_pixels else 1)
        static = n * per_image if first_start == lo else 0  # pixels, maps
        itemsize = stored_dtype(settings.store_dtype).itemsize
        _check_disk_space(path, first[0], layouts, n, first_start - lo, itemsize, static)
    with CacheWriter(
        path, attrs, overwrite=overwrite, allow_nonfinite=settings.allow_nonfinite
    ) as writer:
        objects = data.object_labels()
        writer.write_static(
            (n, *data.canvas, 3) if settings.store_pixels else None,
            (n, *data.canvas),
            {name: values[lo:hi] for name, values in data.labels.items()},
            data.label_classes,
            layouts,
            {name: values[lo:hi] for name, values in objects.items()},
            sizes[lo:hi],
        )
        for condition, intervention in settings.interventions.items():
            if intervention is None:
                continue
            described = {
                _size_key(hw): intervention.describe(adapter, hw) for hw in settings.shapes
            }
            writer.describe_condition(
                condition,
                described[_size_key(settings.shapes[0])]
                if len(settings.shapes) == 1
                else {"by_image_size": described},
            )
        if lo + writer.n_written != first_start:  # the file on disk resumes elsewhere
            stream.close()
            stream, first = batches(lo + writer.n_written), None
        bar = tqdm(total=n, initial=writer.n_written, unit="img", disable=not settings.progress)
        with bar, closing(stream), BackgroundWriter(writer) as background:
            for start in range(lo + writer.n_written, hi, settings.batch_size):
                found, pixels, maps = first if first is not None else captured(next(stream))
                first = None
                background.put(  # written while the next batch is captured
                    start - lo,
                    {condition: values[0] for condition, values in found.items()},
                    {condition: values[1] for condition, values in found.items()},
                    pixels=pixels,
                    maps=maps,
                )
                bar.update(min(hi, start + settings.batch_size) - start)
        return writer.finalize()


def capture_set(
    loaded: LoadedModel,
    data: ImageSet,
    *,
    sites: str | Sequence[str] | None = None,
    conditions: str | Sequence[str] | None = None,
    prompt: str | None = None,
    batch_size: int = 32,
    seed: int = 0,
) -> MemoryCache:
    """The activations of ``data``'s images at ``sites`` under ``conditions`` (default:
    the baseline only), held in memory as float32: a :class:`caches.MemoryCache` the
    probes read as they read a cache file (``probes.sweep(capture_set(...))``), for a
    set small enough to hold (a notebook's fifty images); :func:`extract` writes a file."""
    adapter = loaded.adapter
    sites = sort_sites([adapter.check_site(s) for s in as_names(sites, "sites") or adapter.sites()])
    conditions = list(dict.fromkeys([BASELINE, *(as_names(conditions, "conditions") or [])]))
    conditions = check_conditions(conditions, adapter, data.distinct_sizes)
    interventions = {c: make_intervention(c, seed=seed) for c in conditions}
    prompt = prompt if prompt is not None else adapter.default_prompt(DEFAULT_QUESTION)
    prepare(interventions, loaded, data, prompt, batch_size)
    n = len(data)
    sizes = data.sizes  # (n, 2)
    by_size = {hw: {s: adapter.token_layout(s, hw) for s in sites} for hw in data.distinct_sizes}
    values: dict[tuple[str, str], list[np.ndarray]] = {}
    images, maps = data.pixels(np.arange(n)), data.maps(np.arange(n))
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        for condition, intervention in interventions.items():
            acts, _, _ = _capture_batch(
                loaded,
                start,
                images[start:stop],
                maps[start:stop],
                sizes[start:stop],
                sites,
                prompt,
                intervention,
                ranges=False,
            )
            for site, found in acts.items():
                parts = values.setdefault((site, condition), [])
                parts += [v.reshape(-1, v.shape[-1]).numpy() for v in found]  # (tokens, d)
    tokens = {}
    for key, parts in values.items():
        counts = [len(part) for part in parts]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        tokens[key] = SiteTokens(np.concatenate(parts).astype(np.float32), offsets)
    return MemoryCache(
        tokens=tokens,
        layouts={s: [by_size[(int(h), int(w))][s] for h, w in sizes] for s in sites},
        images=images,
        object_map=maps,
        image_sizes=np.asarray(sizes),
        label_values=dict(data.labels),
        classes=dict(data.label_classes),
        object_values=data.object_labels(),
        attrs={"model": loaded.source, "model_family": adapter.family, "prompt": prompt},
    )


def default_store_dtype(loaded: LoadedModel) -> str:
    """How a model's activations are stored unless told: in its own dtype where that is
    float16 or bfloat16 (no conversion, nothing lost), else the family's
    (``adapter.store_dtype``: float16, float32 for Gemma 3's large activations)."""
    own = loaded.dtype_name
    return own if own in ("float16", BFLOAT16) else loaded.adapter.store_dtype


def reusable(path: Path, attrs: dict) -> bool:
    """Whether the finished cache at ``path`` was made with ``attrs``' settings (then it
    is reused as it is); an OutputExistsError that names the first difference otherwise."""
    with CacheReader(path) as reader:  # refuses an unreadable or incomplete file
        differs = first_difference(reader.stored_attrs, attrs)
    if differs is not None:
        key, found, now = differs
        raise OutputExistsError(
            f"{path} already exists, made with a different {key!r} (found "
            f"{short_repr(found)}, now {short_repr(now)}); pass overwrite=True "
            f"to replace it or choose another output folder"
        )
    return True


def _resume_point(tmp: Path, attrs: dict) -> int:
    """The image an unfinished cache with these settings resumes from (0 if there is none,
    or if it cannot be read: the writer then says why)."""
    if not tmp.is_file():
        return 0
    try:
        with h5py.File(tmp, "r") as handle:
            stored = dict(handle.attrs)
    except OSError:
        return 0
    same = first_difference(stored, attrs) is None
    return int(stored.get("n_written", 0)) if same and stored.get("static_complete") else 0


def _check_disk_space(
    path: Path,
    first: dict,
    layouts: dict,
    n: int,
    start: int,
    itemsize: int,
    static: int,
) -> None:
    """Refuse, before writing, when the disk cannot hold what is left to write (the
    activations of images ``start..n`` and ``static`` bytes of images and maps)."""
    needed = 0  # bytes of every condition's every site, all images
    for acts, extra in first.values():
        for kind, found in (("patch", acts), ("extra", extra)):
            for site, values in found.items():
                layout = layouts[site]
                if isinstance(layout, TokenLayout):
                    tokens = (len(layout) if kind == "patch" else len(layout.extra)) * n
                else:
                    tokens = sum(len(x) if kind == "patch" else len(x.extra) for x in layout)
                needed += tokens * values.width * itemsize
    total = needed
    needed = needed * (n - start) // max(n, 1) + static + METADATA_ROOM
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise DiskFullError(
            f"the cache needs about {human_bytes(needed)} more, but the disk holding "
            f"{folder} has {human_bytes(free)} free; free some space, choose another "
            f"out= path on a larger disk, or capture fewer sites or conditions"
        )
    log.info(
        "the cache's activations take about %s uncompressed (%d images; sites x tokens x "
        "width x conditions x %d bytes)",
        human_bytes(total),
        n,
        itemsize,
    )


class _Preprocess:
    """The processor's inputs for a batch whose images share one size (None for a batch
    of several sizes, grouped and preprocessed at capture): run where the batch is
    decoded, in a loader worker when there are workers, and once for every condition."""

    def __init__(self, adapter: Any, prompt: str, sizes: np.ndarray) -> None:
        self.adapter, self.prompt, self.sizes = adapter, prompt, sizes

    def __call__(self, start: int, pixels: np.ndarray) -> dict[str, torch.Tensor] | None:
        shapes = {(int(h), int(w)) for h, w in self.sizes[start : start + len(pixels)]}
        if len(shapes) != 1:
            return None
        height, width = shapes.pop()
        return self.adapter.build_inputs(pixels[:, :height, :width], self.prompt)


def _size_key(size: tuple[int, int]) -> str:
    """How an image size names its entry in a condition's description: ``"32"`` for a
    square, ``"200x300"`` (height x width) otherwise."""
    height, width = size
    return str(height) if height == width else f"{height}x{width}"


def _capture_batch(
    loaded: LoadedModel,
    start: int,
    pixels: np.ndarray,
    maps: np.ndarray,
    sizes: np.ndarray,
    sites: list[str],
    prompt: str,
    intervention: Intervention | None,
    dtype: torch.dtype | None = torch.float32,
    inputs: dict[str, torch.Tensor] | None = None,
    ranges: bool = True,
) -> tuple[dict[str, SiteValues], dict[str, SiteValues], dict[str, torch.Tensor]]:
    """A batch's images ``pixels`` ``(batch, *canvas, 3)``, of ``sizes`` ``(batch, 2)``
    (height, width; each image in its top-left corner; ``maps`` ``(batch, *canvas)``
    their object maps and ``start`` the data set's index of the first, for the
    interventions that need them), captured at ``sites``: one
    forward pass per group of images the adapter can batch together (all of them where
    every image becomes one input shape; else those of one size). Returns ``site ->
    (batch, tokens, d)`` (one size) or one ``(tokens_i, d)`` per image, as ``dtype``
    (None: the model's). ``inputs``: the processor's inputs for a batch of one size,
    where built already (:class:`_Preprocess`). Third, with ``ranges``: each recording's
    value range (``"acts/<site>"``, ``"extra/<site>"``: ``(2,)`` smallest and largest,
    over every forward pass), reduced on the model's device."""
    shapes = [(int(h), int(w)) for h, w in sizes]
    if len(set(shapes)) == 1:
        height, width = shapes[0]
        captured = capture_tokens(
            loaded,
            pixels[:, :height, :width],
            sites,
            prompt=prompt,
            intervention=intervention,
            context=BatchContext(
                object_maps=list(maps[:, :height, :width]),
                indices=start + np.arange(len(pixels)),
                prompt=prompt,
            ),
            dtype=dtype,
            inputs=inputs,
            ranges=ranges,
        )
        return captured.acts, captured.extra, captured.ranges
    acts: dict[str, list] = {site: [None] * len(sizes) for site in sites}
    extra: dict[str, list] = {}
    found_ranges: dict[str, torch.Tensor] = {}
    for members in loaded.adapter.batch_groups(sizes):
        images = [pixels[i, : shapes[i][0], : shapes[i][1]] for i in members]  # (h_i, w_i, 3)
        if len({shapes[i] for i in members}) == 1:
            images = np.stack(images)  # (group, height, width, 3)
        crops = [maps[i, : shapes[i][0], : shapes[i][1]] for i in members]  # (h_i, w_i)
        context = BatchContext(
            object_maps=crops, indices=start + np.asarray(members), prompt=prompt
        )
        captured = capture_tokens(
            loaded,
            images,
            sites,
            prompt=prompt,
            intervention=intervention,
            context=context,
            dtype=dtype,
            ranges=ranges,
        )
        for key, found in captured.ranges.items():  # (2,): the widest over the groups
            seen = found_ranges.get(key, found)  # minimum and maximum keep a NaN
            found_ranges[key] = torch.stack([seen[0].minimum(found[0]), seen[1].maximum(found[1])])
        for tree, found in ((acts, captured.acts), (extra, captured.extra)):
            for site, values in found.items():
                slots = tree.setdefault(site, [None] * len(sizes))
                for j, i in enumerate(members):
                    slots[i] = values[j]
    for site, slots in extra.items():  # a size whose images carry no extra token of a site
        some = next(v for v in slots if v is not None)  # (k, d)
        empty = some.new_zeros(0, some.shape[-1])
        extra[site] = [empty if v is None else v for v in slots]
    return acts, extra, found_ranges
