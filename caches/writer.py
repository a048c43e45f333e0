"""Write a cache batch by batch; resume an unfinished one; publish it atomically.

The file is written as ``<path>.partial`` and renamed to ``<path>`` only once every
image of every condition is on disk, so a crash never leaves a file that looks complete,
and an existing cache is replaced only by a finished one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from caches.schema import (
    ACT_DTYPE,
    MATCH_ATTRS,
    SCHEMA_VERSION,
    acts_path,
    extra_path,
    layout_path,
)
from interp.errors import CacheError, OutputExistsError
from interp.layout import TokenLayout

__all__ = ["CacheWriter", "partial_path"]


def partial_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".partial")


def _encode(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, np.integer)) else json.dumps(value)


class CacheWriter:
    """Create (or resume) ``<path>.partial`` and fill it.

    ``attrs`` are the root attributes (see :data:`caches.schema.ROOT_ATTRS`) except the
    bookkeeping ones (``n_written``, ``complete``, ``schema_version``) that the writer owns.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        attrs: dict[str, Any],
        *,
        overwrite: bool = False,
        resume: bool = True,
    ) -> None:
        self.path = Path(path)
        self.tmp = partial_path(self.path)
        if self.path.exists() and not overwrite:
            raise OutputExistsError(
                f"{self.path} already exists; pass --overwrite (overwrite=True) to replace it "
                f"or choose another output folder"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        attrs = {"schema_version": SCHEMA_VERSION, **attrs}
        encoded = {k: _encode(v) for k, v in attrs.items()}
        if self.tmp.exists() and resume:
            self._file = self._reopen(encoded)
        else:
            self.tmp.unlink(missing_ok=True)
            self._file = h5py.File(self.tmp, "w")
            self._file.attrs.update(encoded)
            self._file.attrs["n_written"] = 0
            self._file.attrs["complete"] = False

    def _reopen(self, encoded: dict[str, Any]) -> h5py.File:
        try:
            handle = h5py.File(self.tmp, "a")
        except OSError as err:
            raise CacheError(
                f"unfinished cache {self.tmp} is unreadable ({err}); delete it and run again"
            ) from err
        for key in MATCH_ATTRS:
            found = handle.attrs.get(key)
            if found != encoded.get(key):
                handle.close()
                raise CacheError(
                    f"unfinished cache {self.tmp} was made with a different {key!r} "
                    f"(found {found!r}, now {encoded.get(key)!r}); delete it to start afresh "
                    f"or choose another output folder"
                )
        return handle

    @property
    def n_written(self) -> int:
        return int(self._file.attrs["n_written"])

    def write_static(
        self,
        images: np.ndarray,
        object_map: np.ndarray,
        labels: dict[str, np.ndarray],
        label_classes: dict[str, tuple[str, ...]],
        layouts: dict[str, TokenLayout],
        object_labels: dict[str, np.ndarray] | None = None,
    ) -> None:
        """Stimuli, labels (of the first object and the image; ``object_labels`` of every
        object, ``(n, max objects)``, -1 padded) and each site's token layout (idempotent
        on resume)."""
        f = self._file
        if "images/pixels" in f:
            return
        n = len(images)
        f.create_dataset("images/pixels", data=images, dtype="uint8", chunks=(1, *images.shape[1:]))
        f.create_dataset(
            "images/object_map", data=object_map, dtype="int8", chunks=(1, *object_map.shape[1:])
        )
        for name, values in labels.items():
            ds = f.create_dataset(f"labels/{name}", data=values)
            if name in label_classes:
                ds.attrs["classes"] = json.dumps(list(label_classes[name]))
        for name, values in (object_labels or {}).items():
            ds = f.create_dataset(f"objects/{name}", data=values.astype(np.int64))
            ds.attrs["classes"] = json.dumps(list(label_classes[name]))
        for site, layout in layouts.items():
            group = f.create_group(layout_path(site))
            group.create_dataset("boxes", data=layout.boxes.astype(np.float32))
            group.create_dataset("crops", data=layout.crops.astype(np.int16))
            group.create_dataset("grid", data=layout.grid.astype(np.int32))
            group.attrs["extra"] = json.dumps(list(layout.extra))
        f.attrs["n_images"] = n

    def describe_condition(self, condition: str, description: dict[str, Any]) -> None:
        group = self._file.require_group(f"ablations/{condition}")
        group.attrs["intervention"] = json.dumps(description)

    def write_batch(
        self,
        start: int,
        acts: dict[str, dict[str, torch.Tensor]],
        extra: dict[str, dict[str, torch.Tensor]] | None = None,
    ) -> None:
        """Write ``condition -> site -> (batch, tokens, d)`` for images ``start:start+batch``
        (``extra``: the same for the tokens that carry no patch).

        Token counts must match the site's layout. Images must arrive in order;
        ``n_written`` advances only after the whole batch of every condition is flushed,
        so a resume restarts at a clean boundary.
        """
        if start != self.n_written:
            raise CacheError(f"batch starts at image {start}, expected {self.n_written}")
        size = None
        for kind, tree in (("patch", acts), ("extra", extra or {})):
            for condition, sites in tree.items():
                for site, values in sites.items():
                    self._check_tokens(site, kind, values.shape[1])
                    path = (acts_path if kind == "patch" else extra_path)(site, condition)
                    dataset = self._dataset(path, values.shape[1:])
                    size = len(values)
                    dataset[start : start + size] = values.numpy().astype(ACT_DTYPE)
        self._file.flush()
        self._file.attrs["n_written"] = start + (size or 0)
        self._file.flush()

    def _check_tokens(self, site: str, kind: str, tokens: int) -> None:
        group = self._file.get(layout_path(site))
        if group is None:
            raise CacheError(f"no token layout for site {site!r}; write_static must name it")
        expected = len(group["boxes"]) if kind == "patch" else len(json.loads(group.attrs["extra"]))
        if tokens != expected:
            raise CacheError(
                f"site {site!r} gave {tokens} {kind} tokens per image, its layout has "
                f"{expected}; the family adapter's token_layout and select disagree"
            )

    def _dataset(self, path: str, shape: tuple[int, ...]) -> h5py.Dataset:
        if path not in self._file:
            n_images = int(self._file.attrs["n_images"])
            self._file.create_dataset(
                path, shape=(n_images, *shape), dtype=ACT_DTYPE, chunks=(1, *shape)
            )
        return self._file[path]

    def finalize(self) -> Path:
        """Mark complete, close and atomically publish the cache at :attr:`path`."""
        n_images = int(self._file.attrs["n_images"])
        if self.n_written != n_images:
            raise CacheError(f"only {self.n_written} of {n_images} images written")
        self._file.attrs["complete"] = True
        self._file.close()
        os.replace(self.tmp, self.path)
        return self.path

    def close(self) -> None:
        """Close without publishing (the ``.partial`` file stays for a resume)."""
        if self._file.id.valid:
            self._file.close()

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
