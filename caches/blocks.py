"""Reading a site's stored values block by block, at the speed of the storage.

An h5py slice read goes through HDF5's selection machinery and a copy more than the
bytes need: about 3.0 GB/s of float16 on a 2-core cloud CPU where a raw sequential read
of the same bytes gives 3.9. Every image of a dense site is one chunk, so its bytes can
be read straight into place (``H5Dread_chunk``, h5py's ``read_direct_chunk``), as can a
ragged site's chunks of flat rows (the two at the ends through a small buffer); a
compressed site is read with ``read_direct`` (HDF5 runs its filters). Widening
to float32 (bfloat16 exactly, as its bits shifted) runs in torch, on every core.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import h5py
import numpy as np

from caches.chunks import raw_chunks_hold
from caches.encoding import ENCODING_ATTR
from caches.schema import BFLOAT16

__all__ = ["STEP_BYTES", "images_per_step", "read_rows", "stored_blocks", "widen"]

STEP_BYTES = 64 * 2**20  # stored bytes read per step: flat memory, warm caches


def images_per_step(raw: h5py.Dataset, offsets: np.ndarray) -> int:
    """How many images make about :data:`STEP_BYTES` of ``raw``'s stored values (at
    least one)."""
    counts = np.diff(offsets)
    per_image = max(int(counts.max(initial=1)), 1) * raw.shape[-1] * raw.dtype.itemsize
    return max(1, STEP_BYTES // per_image)


def read_rows(
    raw: h5py.Dataset, start: int, stop: int, offsets: np.ndarray, out: np.ndarray
) -> None:
    """The stored values of images ``start..stop-1`` of ``raw`` (``(n, tokens, d)`` or
    flat ``(rows, d)`` cut by ``offsets``) into ``out`` ``(rows, d)``, of ``raw``'s dtype
    and C-contiguous, as they are in the file."""
    lo, hi = int(offsets[start]), int(offsets[stop])
    as_stored = raw_chunks_hold(raw, out)
    if raw.ndim == 3:
        if as_stored and raw.chunks == (1, *raw.shape[1:]):
            images = out.reshape(stop - start, -1)  # (images, tokens * d), one chunk each
            for i in range(start, stop):
                raw.id.read_direct_chunk((i, 0, 0), out=memoryview(images[i - start]).cast("B"))
            return
        raw.read_direct(out.reshape(stop - start, *raw.shape[1:]), np.s_[start:stop])
        return
    if hi <= lo:
        return
    if not (as_stored and raw.chunks[1] == raw.shape[1]):
        raw.read_direct(out, np.s_[lo:hi])
        return
    size = raw.chunks[0]
    scratch = None  # (c, d): a chunk the rows fill only in part
    for corner in range(lo // size * size, hi, size):
        first, last = max(corner, lo), min(corner + size, hi)
        if first == corner and last == corner + size:  # whole: straight into place
            target = out[corner - lo : last - lo]
            raw.id.read_direct_chunk((corner, 0), out=memoryview(target).cast("B"))
            continue
        if scratch is None:
            scratch = np.empty(raw.chunks, dtype=raw.dtype)
        raw.id.read_direct_chunk((corner, 0), out=memoryview(scratch).cast("B"))
        out[first - lo : last - lo] = scratch[first - corner : last - corner]


def widen(stored: np.ndarray, encoding: Any, out: np.ndarray) -> None:
    """``out[...] = stored`` as float32, ``stored`` being float16, float32, or the raw
    bits of bfloat16 (``encoding == "bfloat16"``), exactly; in torch (threaded)."""
    import torch  # reading a cache's metadata does not pay for torch

    source = torch.from_numpy(stored)
    if encoding == BFLOAT16:
        source = source.view(torch.int16).view(torch.bfloat16)  # (rows, d)
    torch.from_numpy(out).copy_(source)


def stored_blocks(
    raw: h5py.Dataset, offsets: np.ndarray, n: int, step: int | None = None
) -> Iterator[tuple[int, int, np.ndarray]]:
    """``(start, stop, values)`` for images ``0..n-1`` of ``raw``, ``step`` images at a
    time (default: :func:`images_per_step`): ``values`` ``(rows, d)`` as stored, in one
    buffer that is reused (copy what must outlive the step)."""
    step = step or images_per_step(raw, offsets[: n + 1])
    counts = np.diff(offsets[: n + 1])
    most = max((int(counts[s : s + step].sum()) for s in range(0, n, step)), default=0)
    buffer = np.empty((most, raw.shape[-1]), dtype=raw.dtype)  # (rows, d)
    for start in range(0, n, step):
        stop = min(n, start + step)
        rows = int(offsets[stop] - offsets[start])
        read_rows(raw, start, stop, offsets, buffer[:rows])
        yield start, stop, buffer[:rows]


def encoding_of(raw: h5py.Dataset) -> Any:
    """The encoding attribute of a stored dataset (``"bfloat16"``, or None)."""
    return raw.attrs.get(ENCODING_ATTR)
