"""How each storage dtype lies in the file, and how it reads back (numpy only: light).

float16 and float32 are stored as HDF5 floats. HDF5 and numpy have no bfloat16, so
bfloat16 activations are stored as their raw 16 bits in a ``uint16`` dataset with the
attribute ``encoding = "bfloat16"``: nothing is rounded or widened on the way to the
file, and a value's float32 is its bits shifted left by 16, exactly (bfloat16 is the top
half of a float32). :class:`BFloat16Dataset` reads such a dataset lazily as float32, so
readers need not know.
"""

from __future__ import annotations

from typing import Any

import h5py
import numpy as np

from caches.schema import BFLOAT16, STORE_DTYPES
from interp.errors import ConfigError

__all__ = ["ENCODING_ATTR", "BFloat16Dataset", "stored_dtype", "bfloat16_to_float32", "decoded"]

ENCODING_ATTR = "encoding"  # dataset attribute naming an encoding HDF5 lacks ("bfloat16")


def stored_dtype(name: str) -> np.dtype:
    """The numpy dtype a storage dtype ``name`` (one of ``STORE_DTYPES``) has in the file."""
    if name not in STORE_DTYPES:
        raise ConfigError(f"store_dtype must be one of {STORE_DTYPES}, got {name!r}")
    return np.dtype(np.uint16) if name == BFLOAT16 else np.dtype(name)


def bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    """Raw bfloat16 bits (uint16) as the float32 values they encode, exactly."""
    widened = bits.astype(np.uint32) << np.uint32(16)  # bfloat16 = a float32's top half
    return widened.view(np.float32)


class BFloat16Dataset:
    """A lazy view of a bfloat16-encoded dataset that reads as float32: slicing it reads
    those rows only, as an ``h5py.Dataset`` does (``shape``, ``ndim``, ``len``, ``attrs``
    and ``chunks`` are the stored dataset's; ``raw`` is the dataset itself)."""

    dtype = np.dtype(np.float32)

    def __init__(self, raw: h5py.Dataset) -> None:
        self.raw = raw

    def __getitem__(self, key: Any) -> np.ndarray:
        return bfloat16_to_float32(np.asarray(self.raw[key]))

    def __len__(self) -> int:
        return len(self.raw)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        values = self[()]
        return values if dtype is None else values.astype(dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.raw.shape

    @property
    def ndim(self) -> int:
        return self.raw.ndim

    @property
    def attrs(self) -> h5py.AttributeManager:
        return self.raw.attrs

    @property
    def chunks(self) -> tuple[int, ...] | None:
        return self.raw.chunks

    def astype(self, dtype: Any) -> _Converted:
        return _Converted(self, np.dtype(dtype))


class _Converted:
    """``dataset.astype(dtype)[key]``, as h5py spells a converting read."""

    def __init__(self, source: BFloat16Dataset, dtype: np.dtype) -> None:
        self.source, self.dtype = source, dtype

    def __getitem__(self, key: Any) -> np.ndarray:
        return self.source[key].astype(self.dtype, copy=False)


def decoded(dataset: h5py.Dataset | None) -> h5py.Dataset | BFloat16Dataset | None:
    """``dataset`` as it reads: a :class:`BFloat16Dataset` where it is bfloat16-encoded,
    else itself."""
    if dataset is not None and dataset.attrs.get(ENCODING_ATTR) == BFLOAT16:
        return BFloat16Dataset(dataset)
    return dataset
