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

import h5py
import numpy as np

__all__ = ["direct_writable", "write_leading", "write_flat"]


def direct_writable(dataset: h5py.Dataset, values: np.ndarray) -> bool:
    """Whether ``values`` can go into ``dataset`` as raw chunk bytes: it is chunked, has
    no filter, and stores exactly ``values``'s dtype (byte order included)."""
    return (
        dataset.chunks is not None
        and dataset.id.get_create_plist().get_nfilters() == 0
        and dataset.dtype == values.dtype
    )


def write_leading(
    dataset: h5py.Dataset, start: int, values: np.ndarray, direct: bool = True
) -> None:
    """``dataset[start : start + len(values)] = values`` for a dataset chunked one entry of
    its first axis at a time (``chunks == (1, *shape[1:])``): one chunk write per entry
    (``direct``, where :func:`direct_writable`), else a slice assignment."""
    whole = dataset.chunks is not None and dataset.chunks == (1, *dataset.shape[1:])
    if not (direct and whole and direct_writable(dataset, values)):
        dataset[start : start + len(values)] = values
        return
    values = np.ascontiguousarray(values)  # (batch, *chunk)
    corner = (0,) * (dataset.ndim - 1)
    for i, entry in enumerate(values):
        dataset.id.write_direct_chunk((start + i, *corner), entry)


def write_flat(dataset: h5py.Dataset, first: int, rows: np.ndarray, direct: bool = True) -> None:
    """``dataset[first : first + len(rows)] = rows`` for a ``(rows, d)`` dataset chunked
    ``(c, d)`` (a ragged site's flat tokens), rows arriving in order.

    Chunks the rows fill are written as they lie in ``rows``. The chunk where they start
    may hold earlier rows (the previous batch's last image): it is read back, completed
    and rewritten whole; the chunk where they end is written with zeros after them (the
    fill value HDF5 gives unwritten rows), which the next batch overwrites. So each batch
    writes its bytes once, plus at most one chunk."""
    if not len(rows):
        return
    size, width = dataset.chunks if dataset.chunks is not None else (0, 0)
    if not (direct and width == dataset.shape[1] and direct_writable(dataset, rows)):
        dataset[first : first + len(rows)] = rows
        return
    rows = np.ascontiguousarray(rows)  # (rows, d)
    stop = first + len(rows)
    for corner in range(first // size * size, stop, size):
        end = corner + size
        if corner >= first and end <= stop:  # filled by these rows alone
            dataset.id.write_direct_chunk((corner, 0), rows[corner - first : end - first])
            continue
        chunk = np.zeros((size, width), dtype=rows.dtype)  # (c, d)
        if corner < first:  # earlier images' rows, on disk already
            chunk[: first - corner] = dataset[corner:first]
        lo, hi = max(corner, first), min(end, stop)
        chunk[lo - corner : hi - corner] = rows[lo - first : hi - first]
        dataset.id.write_direct_chunk((corner, 0), chunk)
