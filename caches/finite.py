"""Whether an array holds a value that is not finite, at the speed of memory (numpy only).

A float is inf or NaN exactly when its exponent bits are all set, that is when its bits
without the sign are at least the exponent mask. So one ``bitwise_and`` and one ``max``
over the raw bits answer it, block by block through a scratch buffer that stays in the
CPU's cache: about 12 GB/s of float16 on one core of a 2-core cloud CPU, against 1.6 GB/s
for ``numpy.isfinite`` (which writes a boolean array as large as the input, then reads it
again). Counting and locating the bad values, needed only to report them, is left to the
rare caller that found some.
"""

from __future__ import annotations

import threading

import numpy as np

__all__ = ["EXPONENT_BITS", "any_nonfinite"]

# The exponent mask of each float encoding, by its name and its bits' width.
EXPONENT_BITS = {"float16": 0x7C00, "bfloat16": 0x7F80, "float32": 0x7F800000}
_MAGNITUDE = {2: np.uint16(0x7FFF), 4: np.uint32(0x7FFFFFFF)}  # every bit but the sign
_BLOCK = 1 << 18  # elements per step: 0.5 to 1 MiB of scratch, within a core's L2


def any_nonfinite(values: np.ndarray, encoding: str | None = None) -> bool:
    """Whether any element of ``values`` is inf or NaN.

    ``values``: a float16 or float32 array, or raw bits (uint16 / int16 / uint32) of the
    float named by ``encoding`` (``"bfloat16"`` for bfloat16 stored as its 16 bits; by
    default the float of the array's own width)."""
    width = values.dtype.itemsize
    if width not in _MAGNITUDE:
        raise TypeError(f"values must hold 16- or 32-bit floats, got {values.dtype}")
    encoding = encoding or ("float16" if width == 2 else "float32")
    limit = EXPONENT_BITS[encoding]
    bits = np.ascontiguousarray(values).reshape(-1).view(np.uint16 if width == 2 else np.uint32)
    scratch = _scratch(bits.dtype)
    mask = _MAGNITUDE[width]
    for start in range(0, len(bits), _BLOCK):
        block = bits[start : start + _BLOCK]
        part = scratch[: len(block)]
        np.bitwise_and(block, mask, out=part)  # |x| as bits
        if part.max() >= limit:
            return True
    return False


_SCRATCH = threading.local()  # one buffer per thread and width, kept


def _scratch(dtype: np.dtype) -> np.ndarray:
    """This thread's scratch of ``_BLOCK`` elements of ``dtype``, made once: a buffer made
    per call would be mapped and unmapped by the allocator every time, and each unmapping
    interrupts the other cores (the writer thread's among them)."""
    key = f"block_{np.dtype(dtype).name}_{_BLOCK}"
    found = getattr(_SCRATCH, key, None)
    if found is None:
        found = np.empty(_BLOCK, dtype=dtype)
        setattr(_SCRATCH, key, found)
    return found
