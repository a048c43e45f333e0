"""Write a cache batch by batch; resume an unfinished one; publish it atomically.

The file is written as ``<path>.partial`` and renamed to ``<path>`` only once every
image of every condition is on disk, so a crash never leaves a file that looks complete,
and an existing cache is replaced only by a finished one.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from caches.chunks import write_flat, write_leading
from caches.encoding import ENCODING_ATTR, stored_dtype
from caches.finite import EXPONENT_BITS, any_nonfinite
from caches.reader import locked_elsewhere
from caches.schema import (
    ACT_DTYPE,
    BFLOAT16,
    COMPRESSIONS,
    MATCH_ATTRS,
    SCHEMA_VERSION,
    STORE_DTYPES,
    acts_path,
    extra_path,
    human_bytes,
    layout_path,
    partial_path,
)
from interp.errors import CacheError, ConfigError, DiskFullError, OutputExistsError
from interp.layout import EXTRA_KINDS, TokenLayout

__all__ = [
    "CacheWriter",
    "partial_path",
    "disk_errors",
    "encode_attr",
    "first_difference",
    "storable",
    "Stored",
    "with_defaults",
]

# What ``write_batch`` takes per site: ``(batch, tokens, d)``, or one ``(tokens_i, d)``
# tensor per image (a ragged site, or a batch gathered from several forward passes).
SiteValues = torch.Tensor | Sequence[torch.Tensor]


# A ragged site's flat tokens are stored in chunks of at most this many bytes (fewer rows
# where no image has that many): a batch's rows start and end inside chunks, and each
# batch rewrites the chunk it starts in, so small chunks keep that rewrite small.
RAGGED_CHUNK_BYTES = 2**18
METADATA_ROOM = 2**18  # free space kept beyond a batch's bytes for HDF5's own metadata
# Settings added after caches were first written, as a file without them was made.
_PREDATED: dict[str, str] = {"compression": "none"}
# create_dataset's arguments for each compression (the byte shuffle first: it is what
# lets float16 activations compress at all).
_FILTERS: dict[str, dict[str, Any]] = {
    "none": {},
    "lzf": {"compression": "lzf", "shuffle": True},
    "gzip": {"compression": "gzip", "compression_opts": 1, "shuffle": True},
}


def _write_layouts(group: h5py.Group, layouts: Sequence[TokenLayout], chunk: int = 4096) -> None:
    """A ragged site's per-image layouts, flat, ``chunk`` images at a time (a folder of
    photographs of many sizes holds a layout per image: never all in memory at once)."""
    total = sum(len(x) for x in layouts)
    boxes = group.create_dataset("boxes", shape=(total, 4), dtype=np.float32)
    crops = group.create_dataset("crops", shape=(total,), dtype=np.int16)
    grid = group.create_dataset("grid", shape=(total, 2), dtype=np.int32)
    row = 0
    for start in range(0, len(layouts), chunk):
        part = TokenLayout.concat(layouts[start : start + chunk])
        stop = row + len(part)
        boxes[row:stop], crops[row:stop], grid[row:stop] = part.boxes, part.crops, part.grid
        row = stop


def _offsets(counts: Sequence[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64)


def short_repr(value: Any, most: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= most else text[: most - 3] + "..."


def _open(path: Path, mode: str) -> h5py.File:
    """``h5py.File`` with errors that tell a file in use from a damaged one."""
    try:
        return h5py.File(path, mode)
    except OSError as err:
        if locked_elsewhere(err):
            raise CacheError(
                f"{path} is in use by another process (a notebook reading it, or another "
                f"extraction writing it); close it there or wait for that run to end, then "
                f"rerun. Do not delete it: it holds finished work"
            ) from err
        raise CacheError(
            f"unfinished cache {path} is unreadable ({str(err).splitlines()[0]}); it is "
            f"damaged: move it aside (or delete it) and run again"
        ) from err


@contextmanager
def disk_errors(path: Path) -> Iterator[None]:
    """Turn a failed write (disk full, read-only, no permission) into one CacheError that
    names the disk and the space left.

    HDF5 may have written part of its metadata when a write failed for lack of room, so
    the unfinished file ``path`` is then set aside as ``<path>.damaged`` (kept, never
    resumed) and the next run starts afresh."""
    previous = sys.unraisablehook
    sys.unraisablehook = _quiet_failed_writes(previous)
    try:
        yield
    except (OSError, RuntimeError) as err:
        text = str(err)
        code = getattr(err, "errno", None)
        found = re.search(r"errno = (\d+)", text)
        if code is None and found:
            code = int(found.group(1))
        if code is None:
            raise
        folder = Path(path).parent
        free = shutil.disk_usage(folder).free if folder.exists() else 0
        if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            aside = Path(path).with_name(Path(path).name + ".damaged")
            if Path(path).exists():
                os.replace(path, aside)
            raise DiskFullError(
                f"the disk holding {folder} filled up while HDF5 was writing "
                f"({human_bytes(free)} free; {os.strerror(code)}), which can leave the "
                f"unfinished cache inconsistent: it was set aside as {aside.name} (delete it "
                f"to free its space); free some space and rerun the same command, which "
                f"starts the cache afresh",
                failed_write=True,
            ) from err
        raise CacheError(
            f"cannot write {path}: {os.strerror(code)}; choose an output folder you can write to"
        ) from err
    finally:
        sys.unraisablehook = previous


def _quiet_failed_writes(previous: Callable) -> Callable:
    """An unraisable-exception hook that drops what HDF5 reports while releasing objects
    after a failed write (the error itself is raised once, as a CacheError)."""

    def hook(unraisable: Any) -> None:
        failed = isinstance(unraisable.exc_value, (OSError, RuntimeError))
        if failed and "write failed" in str(unraisable.exc_value):
            return
        previous(unraisable)

    return hook


_TORCH_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass(frozen=True)
class Stored:
    """One site's values for a batch as they go into the file: ``images``, each image's
    ``(tokens_i, d)`` rows in the storage dtype's file form (views of what the capture
    handed over where no conversion was needed: nothing is concatenated), ``bad`` how
    many values are not finite (kept only with ``allow_nonfinite``)."""

    images: list[np.ndarray]
    bad: int

    @property
    def counts(self) -> list[int]:
        """The tokens of each image."""
        return [len(rows) for rows in self.images]

    @property
    def nbytes(self) -> int:
        return sum(rows.nbytes for rows in self.images)

    @property
    def width(self) -> int:
        return self.images[0].shape[-1]


def storable(
    values: SiteValues | Stored,
    dtype: str,
    site: str,
    condition: str,
    start: int,
    allow_nonfinite: bool = False,
    value_range: Sequence[float] | torch.Tensor | None = None,
) -> Stored:
    """One site's values for images ``start..`` (``(batch, tokens, d)`` or one ``(tokens_i,
    d)`` per image, in any float dtype) as they go into the file (:class:`Stored`): rows
    in the storage dtype ``dtype`` (one of ``STORE_DTYPES``; bfloat16 as its raw bits, see
    :mod:`caches.encoding`), converted once, straight from the values' own dtype, and how
    many of them are not finite there (NaN, inf, or beyond the dtype's range): a
    CacheError that names the site, the count, the first image and the fix, unless
    ``allow_nonfinite``. Values already :class:`Stored` are returned as they are.

    ``value_range``: the values' smallest and largest (``Captured.ranges``, reduced on
    the device that made them); where both lie within the storage dtype's finite range,
    no pass over the values is needed to know they are finite."""
    if isinstance(values, Stored):
        return values
    parts = [values] if isinstance(values, torch.Tensor) else list(values)
    known = value_range is not None and _within(value_range, dtype)  # finite, unread
    images, finite = [], True
    for part in parts:  # (batch, tokens, d) or (tokens_i, d)
        stored = part.detach().to("cpu", _TORCH_DTYPES[dtype])  # no copy if so already
        raw = stored.view(torch.int16) if dtype == BFLOAT16 else stored  # numpy: no bfloat16
        rows = raw.numpy().view(stored_dtype(dtype))
        finite = finite and (known or not any_nonfinite(rows, dtype))  # one pass, one core
        images += list(rows) if isinstance(values, torch.Tensor) else [rows]
    if finite:
        return Stored(images, 0)
    flat = np.concatenate([rows.reshape(-1, rows.shape[-1]) for rows in images])
    bits = flat.view(np.uint32 if flat.itemsize == 4 else np.uint16)
    exponent = bits.dtype.type(EXPONENT_BITS[dtype])
    nonfinite = (bits & exponent) == exponent  # (tokens, d): inf or NaN once stored
    bad = int(np.count_nonzero(nonfinite))
    if not allow_nonfinite:
        given = torch.cat([p.detach().reshape(-1, p.shape[-1]).cpu() for p in parts])
        counts = [len(rows) for rows in images]
        raise _nonfinite_error(given, nonfinite, dtype, site, condition, start, counts)
    return Stored(images, bad)


def _within(value_range: Sequence[float] | torch.Tensor, dtype: str) -> bool:
    """Whether values between ``value_range``'s two ends are all finite once stored as
    ``dtype`` (False where an end is NaN or inf, or beyond the dtype's largest value,
    which a conversion might round to inf)."""
    low, high = (float(x) for x in value_range)
    limit = float(torch.finfo(_TORCH_DTYPES[dtype]).max)
    return -limit <= low <= high <= limit


def _nonfinite_error(
    flat: torch.Tensor,
    nonfinite: np.ndarray,
    dtype: str,
    site: str,
    condition: str,
    start: int,
    counts: list[int],
) -> CacheError:
    """Why a batch's values ``flat`` ``(tokens, d)`` cannot be stored as ``dtype``."""
    given = flat.detach().to("cpu", torch.float32).numpy()  # (tokens, d)
    nan, infinite = int(np.isnan(given).sum()), int(np.isinf(given).sum())
    bad = int(nonfinite.sum())
    beyond = bad - nan - infinite  # finite as given, not once stored
    limit = float(torch.finfo(_TORCH_DTYPES[dtype]).max)
    row = int(np.flatnonzero(nonfinite.any(axis=1))[0])
    first = start + int(np.searchsorted(np.cumsum(counts), row, side="right"))
    what = f"{nan} NaN, {infinite} infinite and {beyond} beyond {dtype}'s range (|x| > {limit:.6g})"
    fix = (
        "store them in float32 (store_dtype='float32')"
        if beyond and not nan and not infinite
        else "the model's weights or inputs are broken, or its dtype overflows: check "
        "them, or load it in float32 (dtype='float32')"
    )
    return CacheError(
        f"site {site!r} under {condition!r} gave {bad} of {given.size} values that are "
        f"not finite in the cache ({what}) in images {start}..{start + len(counts) - 1}, "
        f"first in image {first}; {fix}. Nothing of this batch was written"
    )


def with_defaults(attrs: dict[str, Any]) -> dict[str, Any]:
    """Root attributes as the writer completes them (schema version, storage dtype,
    compression)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "store_dtype": ACT_DTYPE,
        "compression": "none",
        **attrs,
    }


def first_difference(stored: Mapping[str, Any], attrs: dict[str, Any]) -> tuple | None:
    """The first setting of :data:`MATCH_ATTRS` in which a file's stored root attributes
    differ from ``attrs`` (completed by :func:`with_defaults`): ``(key, found, now)`` as
    stored, or None where the file was made with the same settings. A setting a file
    predates reads as its default then (an uncompressed cache has no ``compression``)."""
    full = with_defaults(attrs)
    for key in MATCH_ATTRS:
        found = stored.get(key, _PREDATED.get(key))
        now = encode_attr(full[key]) if key in full else None
        if found != now:
            return key, found, now
    return None


def encode_attr(value: Any) -> Any:
    """A root attribute as stored: scalars as they are, anything else as JSON."""
    return value if isinstance(value, (str, int, float, bool, np.integer)) else json.dumps(value)


class CacheWriter:
    """Create (or resume) ``<path>.partial`` and fill it.

    ``attrs`` are the root attributes (see :data:`caches.schema.ROOT_ATTRS`) except the
    bookkeeping ones (``n_written``, ``complete``, ``schema_version``) that the writer owns;
    ``attrs["store_dtype"]`` (default float16) is how activations are stored.

    Every state a kill can leave is resumable: the file is created under a third name
    and renamed to ``.partial`` only once it is flushed; the static data are marked
    complete once flushed; ``n_written`` advances after each flushed batch. Values that are
    not finite, or beyond the storage dtype's range, are refused (``allow_nonfinite``
    stores them and counts them in each dataset's ``nonfinite`` attribute instead).

    Each image's values go into the file as whole chunks (:mod:`caches.chunks`);
    ``direct_chunks = False`` writes them by slice assignment instead, the same file
    more slowly (the reference the tests compare with).
    """

    direct_chunks: bool = True

    def __init__(
        self,
        path: str | os.PathLike,
        attrs: dict[str, Any],
        *,
        overwrite: bool = False,
        resume: bool = True,
        allow_nonfinite: bool = False,
    ) -> None:
        self.path = Path(path)
        self.tmp = partial_path(self.path)
        if self.path.exists() and not overwrite:
            raise OutputExistsError(
                f"{self.path} already exists; pass overwrite=True to replace it "
                f"or choose another output folder"
            )
        self.allow_nonfinite = allow_nonfinite
        # a ragged dataset's rows in the chunk its next image starts in, as last written
        self._before: dict[str, np.ndarray | None] = {}
        attrs = with_defaults(attrs)
        if attrs["store_dtype"] not in STORE_DTYPES:
            raise ConfigError(
                f"store_dtype must be one of {STORE_DTYPES}, got {attrs['store_dtype']!r}"
            )
        self.store_dtype = attrs["store_dtype"]
        if attrs["compression"] not in COMPRESSIONS:
            raise ConfigError(
                f"compression must be one of {COMPRESSIONS}, got {attrs['compression']!r}"
            )
        self.compression = _FILTERS[attrs["compression"]]
        encoded = {k: encode_attr(v) for k, v in attrs.items()}
        above = next((p for p in self.path.parents if p.exists()), None)
        if above is not None and not above.is_dir():
            raise CacheError(
                f"cannot write {self.path}: {above} is a file, not a folder; choose another "
                f"output path"
            )
        with disk_errors(self.tmp):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.tmp.exists() and resume:
                self._file = self._reopen(attrs)
            else:
                self._file = self._create(encoded)

    def _create(self, encoded: dict[str, Any]) -> h5py.File:
        """A new ``.partial`` that any kill leaves readable: written and closed under
        ``.partial.new`` first (a kill there leaves only that, which holds no work)."""
        new = self.tmp.with_name(self.tmp.name + ".new")
        new.unlink(missing_ok=True)
        with h5py.File(new, "w") as handle:
            handle.attrs.update(encoded)
            handle.attrs["n_written"] = 0
            handle.attrs["static_complete"] = False
            handle.attrs["complete"] = False
        os.replace(new, self.tmp)
        return _open(self.tmp, "a")

    def _reopen(self, attrs: dict[str, Any]) -> h5py.File:
        handle = _open(self.tmp, "a")
        differs = first_difference(handle.attrs, attrs)
        if differs is not None:
            handle.close()
            key, found, now = differs
            raise CacheError(
                f"unfinished cache {self.tmp} was made with a different {key!r} "
                f"(found {short_repr(found)}, now {short_repr(now)}); rerun with its settings "
                f"to finish it, or delete it to start afresh, or choose another output folder"
            )
        if not handle.attrs.get("static_complete", False):  # killed while writing it
            for name in list(handle):
                del handle[name]
        return handle

    @property
    def n_written(self) -> int:
        return int(self._file.attrs["n_written"])

    def write_static(
        self,
        images: np.ndarray | tuple[int, ...] | None,
        object_map: np.ndarray | tuple[int, ...],
        labels: dict[str, np.ndarray],
        label_classes: dict[str, tuple[str, ...]],
        layouts: dict[str, TokenLayout | Sequence[TokenLayout]],
        object_labels: dict[str, np.ndarray] | None = None,
        sizes: np.ndarray | None = None,
    ) -> None:
        """Stimuli, labels (of the first object and the image; ``object_labels`` of every
        object, ``(n, max objects)``, -1 padded) and each site's token layout (idempotent
        on resume).

        A site's layout is one :class:`TokenLayout` (every image alike: dense arrays) or
        one per image (the site is stored ragged: flat tokens plus per-image offsets).
        ``sizes`` ``(n, 2)``: the (height, width) of each image in the top-left corner of
        its padded array (default: all of it; ``(n,)`` sides for square images).
        ``images`` ``(n, H, W, 3)`` uint8 and ``object_map`` ``(n, H, W)`` int8 are written
        now, or, given as shapes, filled batch by batch (``write_batch(pixels=, maps=)``);
        ``images=None`` stores no pixels (the images stay where they are).
        """
        f = self._file
        if f.attrs.get("static_complete", False):
            return
        for name, value, dtype in (
            ("images/pixels", images, "uint8"),
            ("images/object_map", object_map, "int8"),
        ):
            if value is None:
                continue
            shape = tuple(value) if isinstance(value, tuple) else value.shape
            f.create_dataset(name, shape=shape, dtype=dtype, chunks=(1, *shape[1:]))
            if not isinstance(value, tuple):
                f[name][...] = value
        shape = f["images/object_map"].shape
        n = shape[0]
        sizes = np.tile(shape[1:3], (n, 1)) if sizes is None else np.asarray(sizes)
        if sizes.ndim == 1:
            sizes = np.stack([sizes, sizes], axis=1)  # square images: one side each
        if (
            sizes.shape != (n, 2)
            or sizes[:, 0].max(initial=0) > shape[1]
            or sizes[:, 1].max(initial=0) > shape[2]
        ):
            raise CacheError(
                f"sizes {sizes.shape} must give a (height, width) per image within the "
                f"{shape[1]}x{shape[2]} array"
            )
        f.create_dataset("images/size", data=sizes.astype(np.int32))  # (n, 2)
        for name, values in labels.items():
            ds = f.create_dataset(f"labels/{name}", data=values)
            if name in label_classes:
                ds.attrs["classes"] = json.dumps(list(label_classes[name]))
        for name, values in (object_labels or {}).items():
            ds = f.create_dataset(f"objects/{name}", data=values.astype(np.int64))
            ds.attrs["classes"] = json.dumps(list(label_classes[name]))
        for site, layout in layouts.items():
            group = f.create_group(layout_path(site))
            if not isinstance(layout, TokenLayout):  # one per image: ragged
                if len(layout) != n:
                    raise CacheError(f"site {site!r} has {len(layout)} layouts for {n} images")
                group.create_dataset("offsets", data=_offsets([len(x) for x in layout]))
                group.create_dataset("extra_offsets", data=_offsets([len(x.extra) for x in layout]))
                codes = [EXTRA_KINDS.index(k) for x in layout for k in x.extra]
                group.create_dataset("extra_kinds", data=np.asarray(codes, dtype=np.int8))
                kinds = [EXTRA_KINDS[c] for c in sorted(set(codes))]  # which kinds occur
                _write_layouts(group, layout)
                group.attrs["extra"] = json.dumps(kinds)
                continue
            group.create_dataset("boxes", data=layout.boxes.astype(np.float32))
            group.create_dataset("crops", data=layout.crops.astype(np.int16))
            group.create_dataset("grid", data=layout.grid.astype(np.int32))
            group.attrs["extra"] = json.dumps(list(layout.extra))
        f.attrs["n_images"] = n
        with disk_errors(self.tmp):
            f.flush()
            f.attrs["static_complete"] = True
            f.flush()

    def describe_condition(self, condition: str, description: dict[str, Any]) -> None:
        group = self._file.require_group(f"ablations/{condition}")
        group.attrs["intervention"] = json.dumps(description)

    def write_batch(
        self,
        start: int,
        acts: dict[str, dict[str, SiteValues | Stored]],
        extra: dict[str, dict[str, SiteValues | Stored]] | None = None,
        *,
        pixels: np.ndarray | None = None,
        maps: np.ndarray | None = None,
    ) -> None:
        """Write ``condition -> site -> values`` for images ``start:start+batch``
        (``extra``: the same for the tokens that carry no patch); values are ``(batch,
        tokens, d)``, one ``(tokens_i, d)`` tensor per image, or already converted by
        :func:`storable` (an extraction converts and checks them in the capturing thread,
        while the previous batch is written). Values not yet converted are converted and
        checked here, all of them before anything is written.

        Token counts must match the site's layout. Images must arrive in order;
        ``n_written`` advances only after the whole batch of every condition is flushed,
        so a resume restarts at a clean boundary. ``pixels`` ``(batch, H, W, 3)`` and
        ``maps`` ``(batch, H, W)``, where given, are the batch's images and object maps
        (for a cache whose ``write_static`` was given their shapes).
        """
        if start != self.n_written:
            raise CacheError(f"batch starts at image {start}, expected {self.n_written}")
        size = None
        pending = []  # everything is checked before anything is written
        for kind, tree in (("patch", acts), ("extra", extra or {})):
            for condition, sites in tree.items():
                for site, values in sites.items():
                    stored = storable(
                        values, self.store_dtype, site, condition, start, self.allow_nonfinite
                    )
                    size = len(stored.counts)
                    offsets = self._offsets(site, kind)
                    expected = np.diff(offsets[start : start + size + 1])  # (size,)
                    given = np.asarray(stored.counts)
                    wrong = np.flatnonzero(given != expected)
                    if len(wrong):
                        i = int(wrong[0])
                        raise CacheError(
                            f"site {site!r} gave {given[i]} {kind} tokens for image "
                            f"{start + i}, its layout has {expected[i]}; the family "
                            f"adapter's token_layout and select disagree"
                        )
                    path = (acts_path if kind == "patch" else extra_path)(site, condition)
                    pending.append((path, site, kind, offsets, stored))
        images = [
            (name, values)
            for name, values in (("pixels", pixels), ("object_map", maps))
            if values is not None and f"images/{name}" in self._file
        ]
        self._check_room(sum(p[4].nbytes for p in pending) + sum(v.nbytes for _, v in images))
        direct = self.direct_chunks
        with disk_errors(self.tmp):
            for name, values in images:
                dataset = self._file[f"images/{name}"]
                write_leading(dataset, start, values.astype(dataset.dtype, copy=False), direct)
            for path, site, kind, offsets, stored in pending:
                dataset = self._dataset(path, site, kind, stored.width, offsets)
                if dataset.ndim == 2:  # ragged: flat tokens
                    before = self._before.get(path)
                    self._before[path] = write_flat(
                        dataset, int(offsets[start]), stored.images, direct, before
                    )
                else:
                    write_leading(dataset, start, stored.images, direct)
                if stored.bad:
                    total = int(dataset.attrs.get("nonfinite", 0)) + stored.bad
                    dataset.attrs["nonfinite"] = total
            self._file.flush()
            self._file.attrs["n_written"] = start + (size or 0)
            self._file.flush()

    def _check_room(self, needed: int) -> None:
        """Refuse a batch the disk cannot hold before HDF5 starts writing it (a write
        that fails half-way leaves HDF5 unable even to close the file cleanly)."""
        needed += METADATA_ROOM
        free = shutil.disk_usage(self.tmp.parent).free
        if free < needed:
            raise DiskFullError(
                f"the disk holding {self.tmp.parent} is full: the next batch needs about "
                f"{human_bytes(needed)}, {human_bytes(free)} are free; free some space (or "
                f"pick another out=) and rerun the same command: the unfinished cache "
                f"{self.tmp.name} resumes at image {self.n_written}"
            )

    def _offsets(self, site: str, kind: str) -> np.ndarray:
        """``(n + 1,)`` first token of each image in the flat token order of ``site``."""
        group = self._file.get(layout_path(site))
        if group is None:
            raise CacheError(f"no token layout for site {site!r}; write_static must name it")
        name = "offsets" if kind == "patch" else "extra_offsets"
        if name in group:
            return group[name][()]
        if kind == "patch":
            per_image = len(group["boxes"])
        else:
            per_image = len(json.loads(group.attrs["extra"]))
        return np.arange(int(self._file.attrs["n_images"]) + 1) * per_image

    def _dataset(
        self, path: str, site: str, kind: str, width: int, offsets: np.ndarray
    ) -> h5py.Dataset:
        if path not in self._file:
            n_images = int(self._file.attrs["n_images"])
            if "offsets" in self._file[layout_path(site)]:  # ragged
                longest = max(int(np.diff(offsets).max(initial=1)), 1)
                itemsize = stored_dtype(self.store_dtype).itemsize
                rows = min(longest, max(1, RAGGED_CHUNK_BYTES // (width * itemsize)))
                shape, chunks = (int(offsets[-1]), width), (rows, width)
            else:
                tokens = int(offsets[1] - offsets[0]) if n_images else 0
                shape, chunks = (n_images, tokens, width), (1, tokens, width)
            dataset = self._file.create_dataset(
                path,
                shape=shape,
                dtype=stored_dtype(self.store_dtype),
                chunks=chunks,
                **self.compression,
            )
            if self.store_dtype == BFLOAT16:
                dataset.attrs[ENCODING_ATTR] = BFLOAT16
        return self._file[path]

    def finalize(self) -> Path:
        """Mark complete, close and atomically publish the cache at :attr:`path`."""
        n_images = int(self._file.attrs["n_images"])
        if self.n_written != n_images:
            raise CacheError(f"only {self.n_written} of {n_images} images written")
        with disk_errors(self.tmp):
            self._file.attrs["complete"] = True
            self._file.close()
            os.replace(self.tmp, self.path)
        return self.path

    def close(self) -> None:
        """Close without publishing (the ``.partial`` file stays for a resume)."""
        if self._file.id.valid:
            self._file.close()

    def _close_quietly(self) -> None:
        """Close after a failure without letting a second error (HDF5 failing to flush
        to a full disk) hide the first."""
        with suppress(OSError, RuntimeError):
            self.close()

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, kind: type | None, *exc: object) -> None:
        if kind is None:
            self.close()
        else:
            self._close_quietly()
