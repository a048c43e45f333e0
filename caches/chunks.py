"""Writing a batch as whole HDF5 chunks, the way the bytes already lie in memory.

An h5py slice assignment goes through HDF5's selection and conversion machinery, which
copies the values once more on their way to the file: on a 2-core cloud CPU it writes
float16 activations at about 2 GB/s where the file system takes 3 to 4. Every stored
chunk of a cache is either one image's rows (``(1, tokens, d)`` for a dense site, ``(1,
H, W, ...)`` for the pixels) or a fixed number of flat token rows (a ragged site), so
the writer can hand HDF5 each chunk's bytes as they are (``H5Dwrite_chunk``, h5py's
``write_direct_chunk``), which HDF5 writes without touching them.

The file is the same either way: same datasets, chunk shapes, dtypes and values, bit for
bit (the tests compare both paths). Datasets that pass through a filter (compression)
take the slice assignment, which runs the filter; so do values whose dtype differs from
the dataset's (HDF5 would otherwise store them unconverted).
"""

from __future__ import annotations

from collections.abc import Sequence

import h5py
import numpy as np

__all__ = ["raw_chunks_hold", "write_leading", "write_flat"]


def raw_chunks_hold(dataset: h5py.Dataset, values: np.ndarray) -> bool:
    """Whether ``dataset``'s raw chunk bytes are ``values``'s bytes as they lie in memory
    (so chunks can be written from them and read into them as they are): it is chunked,
    has no filter, and stores exactly ``values``'s dtype (byte order included)."""
    return (
        dataset.chunks is not None
        and dataset.id.get_create_plist().get_nfilters() == 0
        and dataset.dtype == values.dtype
    )


def write_leading(
    dataset: h5py.Dataset,
    start: int,
    entries: Sequence[np.ndarray] | np.ndarray,
    direct: bool = True,
) -> None:
    """``dataset[start + i] = entries[i]`` for a dataset chunked one entry of its first axis
    at a time (``chunks == (1, *shape[1:])``; an entry: one image's ``(tokens, d)`` rows,
    or its pixels): one chunk write per entry (``direct``, where
    :func:`raw_chunks_hold`), else a slice assignment."""
    if not len(entries):
        return
    whole = dataset.chunks is not None and dataset.chunks == (1, *dataset.shape[1:])
    if not (direct and whole and raw_chunks_hold(dataset, entries[0])):
        dataset[start : start + len(entries)] = np.stack(
            [np.reshape(e, dataset.shape[1:]) for e in entries]
        )
        return
    corner = (0,) * (dataset.ndim - 1)
    for i, entry in enumerate(entries):
        dataset.id.write_direct_chunk((start + i, *corner), np.ascontiguousarray(entry))


def write_flat(
    dataset: h5py.Dataset,
    first: int,
    images: Sequence[np.ndarray],
    direct: bool = True,
    before: np.ndarray | None = None,
) -> np.ndarray | None:
    """``dataset[first : first + rows] = concatenate(images)`` for a ``(rows, d)`` dataset
    chunked ``(c, d)`` (a ragged site's flat tokens), rows arriving in order, each image's
    ``(tokens_i, d)`` rows given apart (never concatenated).

    A chunk that lies inside one image's rows is written from them as it is. A chunk
    across images is assembled in a buffer; the chunk where the rows start may hold
    earlier rows (the previous batch's last image): they are read back and the chunk is
    rewritten whole; the chunk where they end is written with zeros after them (the fill
    value HDF5 gives unwritten rows), which the next batch overwrites. So each batch
    writes its bytes once, plus at most one chunk.

    ``before``: the rows from the start of the chunk holding row ``first`` up to it, where
    the caller kept them (what the previous call returned), else read from the file.
    Returns the rows of the chunk these rows end in (to pass as ``before`` next time),
    or None where they were written by slice assignment."""
    total = sum(len(rows) for rows in images)
    size, width = dataset.chunks if dataset.chunks is not None else (0, 0)
    if not (direct and width == dataset.shape[1] and raw_chunks_hold(dataset, images[0])):
        if total:
            dataset[first : first + total] = np.concatenate(images)
        return None
    if not total:
        return before
    images = [np.ascontiguousarray(rows) for rows in images if len(rows)]  # (tokens_i, d)
    starts = first + np.concatenate([[0], np.cumsum([len(rows) for rows in images])])
    stop = int(starts[-1])
    corners = np.arange(first // size * size, stop, size)  # (chunks,) first row of each
    owner = np.searchsorted(starts, corners, side="right") - 1  # the image at each corner
    inside = (owner >= 0) & (corners + size <= starts[np.clip(owner + 1, 0, len(images))])
    begins = starts.tolist()
    buffer = np.empty((size, width), dtype=images[0].dtype)  # (c, d), reused
    write = dataset.id.write_direct_chunk
    for corner, k, whole in zip(corners.tolist(), owner.tolist(), inside.tolist(), strict=True):
        if whole:  # inside image k's rows: written from them as they lie
            offset = corner - begins[k]
            write((corner, 0), images[k][offset : offset + size])
            continue
        end = corner + size
        buffer[...] = 0
        if corner < first:  # earlier images' rows, on disk already
            known = before is not None and len(before) == first - corner
            buffer[: first - corner] = before if known else dataset[corner:first]
        for j in range(max(k, 0), len(images)):
            lo, hi = max(corner, begins[j]), min(end, begins[j + 1])
            if lo >= end:
                break
            buffer[lo - corner : hi - corner] = images[j][lo - begins[j] : hi - begins[j]]
        write((corner, 0), buffer)
    last = stop // size * size  # the chunk the next rows start in: assembled last
    return buffer[: stop - last].copy()
