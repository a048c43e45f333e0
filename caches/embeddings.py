"""Per-image embeddings kept in an HDF5 file beside a mining run, reused while the model,
the data and the kind of embedding stay the same (h5py only: light).

Layout: one dataset per encoder, ``embeddings/<name>`` float32 ``(n, d)``, whose
attributes say what made it (``model``, ``weights_id``, ``embedding``, ``data``: JSON);
the file's root attribute ``schema`` is ``"embeddings/1"``. Each dataset is written under
a temporary name and renamed once whole, so a killed run never leaves a half-written one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from interp.errors import CacheError

__all__ = ["EMBEDDINGS_SCHEMA", "cached_embeddings"]

EMBEDDINGS_SCHEMA = "embeddings/1"


def _encoded(attrs: dict[str, Any]) -> dict[str, str]:
    return {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in attrs.items()}


def cached_embeddings(
    path: str | os.PathLike,
    name: str,
    attrs: dict[str, Any],
    compute: Callable[[], np.ndarray],
) -> np.ndarray:
    """The ``(n, d)`` embeddings ``name`` stored in ``path`` if they were made with
    ``attrs``; else ``compute()``, stored (replacing ones made otherwise) and returned."""
    path = Path(path)
    wanted = _encoded(attrs)
    key = f"embeddings/{name}"
    if path.exists():
        try:
            with h5py.File(path, "r") as handle:
                if key in handle and dict(handle[key].attrs) == wanted:
                    return handle[key][()]
        except OSError as err:
            raise CacheError(
                f"{path} is not a readable embeddings file ({str(err).splitlines()[0]}); "
                f"move it aside or delete it, and run again"
            ) from err
    values = np.ascontiguousarray(compute(), dtype=np.float32)  # (n, d)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "a") as handle:
        if handle.attrs.get("schema", EMBEDDINGS_SCHEMA) != EMBEDDINGS_SCHEMA:
            raise CacheError(f"{path} is not an embeddings file; choose another output folder")
        handle.attrs["schema"] = EMBEDDINGS_SCHEMA
        tmp = f"{key}.writing"
        if tmp in handle:
            del handle[tmp]
        dataset = handle.create_dataset(tmp, data=values)
        dataset.attrs.update(wanted)
        if key in handle:
            del handle[key]
        handle.move(tmp, key)
    return values
