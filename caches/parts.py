"""One cache over the rank files of a data-parallel extraction (h5py only: light).

Each rank of ``torchrun`` writes the images ``start..stop`` of the data set to its own
finished cache, ``<stem>.rank<r>.h5`` (root attribute ``part``). :func:`publish_parts`
then writes the master file every reader opens: its datasets are HDF5 virtual datasets
over the rank files' (concatenated along the first axis: images, or the flat tokens of a
ragged site), the per-image offsets of ragged sites are rebased into one real dataset,
what every rank holds alike (a dense site's layout) is copied, and its root attributes
are those a single process would have written, plus ``parts`` (the rank files' names,
relative to the master's folder, with their images). The rank files must stay beside
it: HDF5 would read a missing one as its fill value, so :func:`check_parts` (run by
``CacheReader``) refuses a master whose rank files are gone or changed, and
:func:`consolidate` copies it into one self-contained file (``h5repack`` keeps virtual
datasets virtual).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from caches.schema import partial_path
from interp.errors import CacheError

__all__ = [
    "PARTS_ATTR",
    "PART_ATTR",
    "part_path",
    "rank_files",
    "publish_parts",
    "check_parts",
    "consolidate",
]

PARTS_ATTR = "parts"  # master file: JSON list of {"file", "start", "stop"}
PART_ATTR = "part"  # rank file: JSON {"rank", "ranks", "start", "stop"}
_OFFSETS = ("offsets", "extra_offsets")  # per-image starts of a ragged site, rebased


def part_path(path: str | os.PathLike, rank: int) -> Path:
    """Where rank ``rank`` writes its part of the cache ``path``: ``<stem>.rank<r><suffix>``
    beside it (``cache.h5`` -> ``cache.rank0.h5``)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.rank{rank}{path.suffix}")


def rank_files(path: str | os.PathLike) -> list[Path]:
    """The rank files of data-parallel extractions of the cache ``path`` lying beside it,
    finished or not (``cache.rank0.h5``, ``cache.rank1.h5.partial``, ...)."""
    path = Path(path)
    found = re.compile(rf"{re.escape(path.stem)}\.rank\d+{re.escape(path.suffix)}(\.partial)?")
    if not path.parent.is_dir():
        return []
    return sorted(p for p in path.parent.iterdir() if found.fullmatch(p.name))


def _per_image(name: str, ragged: bool) -> bool:
    """Whether dataset ``name`` of a rank file grows with its images (so the master
    concatenates it), as opposed to a layout every rank holds alike."""
    if not name.startswith("layout/"):
        return True  # images, labels, objects, acts, ablations, extra
    return ragged  # a ragged site's layout holds every image's tokens


def publish_parts(path: str | os.PathLike, parts: Sequence[str | os.PathLike], attrs: dict) -> Path:
    """Write the master cache ``path`` over the finished rank files ``parts`` (in image
    order), atomically (``<path>.partial``, then renamed), with the root attributes
    ``attrs`` (encoded as stored). Every rank file must be complete and hold the images
    that follow the previous one's."""
    path = Path(path)
    parts = [Path(p) for p in parts]
    handles = [h5py.File(p, "r") for p in parts]
    try:
        described = _describe_parts(path, parts, handles)
        tmp = partial_path(path)
        tmp.unlink(missing_ok=True)
        with h5py.File(tmp, "w") as master:
            first = handles[0]
            names: list[str] = []
            first.visititems(
                lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None
            )
            for name in names:
                _master_dataset(master, name, parts, handles, path.parent)
            groups: list[str] = []
            first.visititems(
                lambda name, item: groups.append(name) if isinstance(item, h5py.Group) else None
            )
            for name in groups:  # group attributes (an intervention's description, ...)
                master.require_group(name).attrs.update(dict(first[name].attrs))
            master.attrs.update(attrs)
            total = described[-1]["stop"]
            master.attrs.update({"n_images": total, "n_written": total, "static_complete": True})
            master.attrs[PARTS_ATTR] = json.dumps(described)
            master.attrs["complete"] = True
        os.replace(tmp, path)
    finally:
        for handle in handles:
            handle.close()
    return path


def _describe_parts(path: Path, parts: list[Path], handles: list[h5py.File]) -> list[dict]:
    """``{"file", "start", "stop"}`` of each rank file; a CacheError unless they are
    complete and follow one another from image 0."""
    described, expected = [], 0
    for part, handle in zip(parts, handles, strict=True):
        if not handle.attrs.get("complete", False) or PART_ATTR not in handle.attrs:
            raise CacheError(f"{part} is not a finished rank file of a cache; rerun the extraction")
        own = json.loads(handle.attrs[PART_ATTR])
        if own["start"] != expected:
            raise CacheError(
                f"{part} holds images {own['start']}..{own['stop'] - 1}, expected them to "
                f"start at {expected}; rerun the extraction with the same number of ranks"
            )
        expected = own["stop"]
        file = os.path.relpath(part, path.parent)
        described.append(
            {
                "file": file,
                "start": own["start"],
                "stop": own["stop"],
                "settings": _settings_of(handle),
            }
        )
    return described


def _settings_of(handle: h5py.File) -> str:
    """A digest of a finished rank file's root attributes (model, weights, data, seed,
    sites, conditions, its images, ...): a rank file of another run differs in it."""
    attrs = {key: str(value) for key, value in sorted(handle.attrs.items())}
    return hashlib.sha256(json.dumps(attrs).encode()).hexdigest()[:16]


def _master_dataset(
    master: h5py.File, name: str, parts: list[Path], handles: list[h5py.File], folder: Path
) -> None:
    """Dataset ``name`` of the master: virtual over every rank's, rebased offsets, or a
    copy of rank 0's."""
    first = handles[0][name]
    group = name.rsplit("/", 1)[0]
    ragged = group.startswith("layout/") and "offsets" in handles[0][group]
    leaf = name.rsplit("/", 1)[-1]
    if group.startswith("layout/") and leaf in _OFFSETS:
        rebased, base = [np.zeros(1, dtype=np.int64)], 0
        for handle in handles:
            offsets = handle[name][()].astype(np.int64)  # (images + 1,)
            rebased.append(offsets[1:] + base)
            base += int(offsets[-1])
        created = master.create_dataset(name, data=np.concatenate(rebased))
    elif not _per_image(name, ragged) or first.ndim == 0:
        created = master.create_dataset(name, data=first[()])
    else:
        rows = [handle[name].shape[0] for handle in handles]
        layout = h5py.VirtualLayout(shape=(sum(rows), *first.shape[1:]), dtype=first.dtype)
        row = 0
        for part, count in zip(parts, rows, strict=True):
            if count:
                source = h5py.VirtualSource(
                    os.path.relpath(part, folder), name, shape=(count, *first.shape[1:])
                )
                layout[row : row + count] = source
            row += count
        fill = np.nan if np.issubdtype(first.dtype, np.floating) else 0
        created = master.create_virtual_dataset(name, layout, fillvalue=fill)
    created.attrs.update(dict(first.attrs))
    counted = [int(h[name].attrs.get("nonfinite", 0)) for h in handles]
    if any(counted):  # values kept though not finite: counted over every rank
        created.attrs["nonfinite"] = sum(counted)


def check_parts(path: Path, handle: h5py.File) -> None:
    """A CacheError unless every rank file of the master cache ``handle`` (at ``path``)
    is beside it, finished, and holds the images the master maps from it."""
    raw = handle.attrs.get(PARTS_ATTR)
    if raw is None:
        return
    for entry in json.loads(raw):
        part = path.parent / entry["file"]
        where = (
            f"{path} is one cache over the rank files of a data-parallel extraction, and its "
            f"images {entry['start']}..{entry['stop'] - 1} lie in {part}"
        )
        if not part.is_file():
            raise CacheError(
                f"{where}, which is missing; keep the rank files beside the cache (move "
                f"them together), or rerun the extraction to write them again"
            )
        try:
            with h5py.File(part, "r") as source:
                own: Any = json.loads(source.attrs.get(PART_ATTR, "{}"))
                complete = bool(source.attrs.get("complete", False))
                settings = _settings_of(source)
        except OSError as err:
            raise CacheError(
                f"{where}, which is unreadable ({str(err).splitlines()[0]}); rerun the "
                f"extraction to write it again"
            ) from err
        if not complete or (own.get("start"), own.get("stop")) != (entry["start"], entry["stop"]):
            raise CacheError(
                f"{where}, which now holds other images ({own.get('start')}..."
                f"{own.get('stop')}) or is unfinished; rerun the extraction (with overwrite) "
                f"to write the rank files and the cache again"
            )
        if entry.get("settings", settings) != settings:
            raise CacheError(
                f"{where}, which was replaced by a rank file of another extraction (its "
                f"settings differ from those the cache was published over); rerun the "
                f"extraction (with overwrite) to write the rank files and the cache again"
            )


def consolidate(
    path: str | os.PathLike, out: str | os.PathLike, *, rows: int = 256, overwrite: bool = False
) -> Path:
    """Copy the cache ``path`` (one published over rank files, or any other) into ``out``
    as one self-contained file: every dataset real, with the chunks and compression of
    its rank files, copied ``rows`` at a time; attributes as they are, without ``parts``.
    Written as ``<out>.partial`` and renamed when done."""
    path, out = Path(path), Path(out)
    if out.exists() and not overwrite:
        raise CacheError(f"{out} already exists; pass overwrite=True or choose another path")
    tmp = partial_path(out)
    with h5py.File(path, "r") as source:
        check_parts(path, source)
        names: list[str] = []
        source.visit(names.append)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(tmp, "w") as target:
            for name in names:
                item = source[name]
                if isinstance(item, h5py.Group):
                    target.require_group(name).attrs.update(dict(item.attrs))
                    continue
                target.create_dataset(name, **_storage(source, path, name))
                for start in range(0, item.shape[0] if item.ndim else 0, rows):
                    target[name][start : start + rows] = item[start : start + rows]
                if not item.ndim:
                    target[name][()] = item[()]
                target[name].attrs.update(dict(item.attrs))
            target.attrs.update({k: v for k, v in source.attrs.items() if k != PARTS_ATTR})
    os.replace(tmp, out)
    return out


def _storage(source: h5py.File, path: Path, name: str) -> dict[str, Any]:
    """``create_dataset`` arguments for a real copy of ``source[name]``: its shape and
    dtype, and the chunks and filters of the dataset it maps (its own, if real)."""
    item = source[name]
    options = {} if item.is_virtual else _filters(item)
    for mapping in item.virtual_sources()[:1] if item.is_virtual else []:
        with h5py.File(path.parent / mapping.file_name, "r") as part:
            options = _filters(part[mapping.dset_name])
    return {"shape": item.shape, "dtype": item.dtype, **options}


def _filters(dataset: h5py.Dataset) -> dict[str, Any]:
    """The chunks and compression of ``dataset``, as ``create_dataset`` takes them."""
    if dataset.chunks is None:
        return {}
    options: dict[str, Any] = {"chunks": dataset.chunks, "shuffle": dataset.shuffle}
    if dataset.compression is not None:
        options["compression"] = dataset.compression
        options["compression_opts"] = dataset.compression_opts
    return options
