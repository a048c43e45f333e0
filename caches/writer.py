"""Write a cache batch by batch; resume an unfinished one; publish it atomically.

The file is written as ``<path>.partial`` and renamed to ``<path>`` only once every
image of every condition is on disk, so a crash never leaves a file that looks complete,
and an existing cache is replaced only by a finished one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
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
from interp.layout import EXTRA_KINDS, TokenLayout

__all__ = ["CacheWriter", "partial_path"]

# What ``write_batch`` takes per site: ``(batch, tokens, d)``, or one ``(tokens_i, d)``
# tensor per image (a ragged site, or a batch gathered from several forward passes).
SiteValues = torch.Tensor | Sequence[torch.Tensor]


def partial_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".partial")


def _offsets(counts: Sequence[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64)


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
        layouts: dict[str, TokenLayout | Sequence[TokenLayout]],
        object_labels: dict[str, np.ndarray] | None = None,
        sizes: np.ndarray | None = None,
    ) -> None:
        """Stimuli, labels (of the first object and the image; ``object_labels`` of every
        object, ``(n, max objects)``, -1 padded) and each site's token layout (idempotent
        on resume).

        A site's layout is one :class:`TokenLayout` (every image alike: dense arrays) or
        one per image (the site is stored ragged: flat tokens plus per-image offsets).
        ``sizes`` ``(n,)``: the side of each image within its padded array (default: all).
        """
        f = self._file
        if "images/pixels" in f:
            return
        n = len(images)
        f.create_dataset("images/pixels", data=images, dtype="uint8", chunks=(1, *images.shape[1:]))
        f.create_dataset(
            "images/object_map", data=object_map, dtype="int8", chunks=(1, *object_map.shape[1:])
        )
        sizes = np.full(n, images.shape[1]) if sizes is None else np.asarray(sizes)
        if sizes.shape != (n,) or sizes.max(initial=0) > min(images.shape[1:3]):
            raise CacheError(f"sizes {sizes.shape} must give one side <= the array's per image")
        f.create_dataset("images/size", data=sizes.astype(np.int32))
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
                layout = TokenLayout.concat(layout, extra=kinds)
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
        acts: dict[str, dict[str, SiteValues]],
        extra: dict[str, dict[str, SiteValues]] | None = None,
    ) -> None:
        """Write ``condition -> site -> values`` for images ``start:start+batch``
        (``extra``: the same for the tokens that carry no patch); values are ``(batch,
        tokens, d)`` or one ``(tokens_i, d)`` tensor per image.

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
                    size = len(values)
                    offsets = self._offsets(site, kind)
                    expected = np.diff(offsets[start : start + size + 1])  # (size,)
                    dense = isinstance(values, torch.Tensor)  # (batch, tokens, d)
                    counts = [values.shape[1]] * size if dense else [len(v) for v in values]
                    given = np.asarray(counts)
                    wrong = np.flatnonzero(given != expected)
                    if len(wrong):
                        i = int(wrong[0])
                        raise CacheError(
                            f"site {site!r} gave {given[i]} {kind} tokens for image "
                            f"{start + i}, its layout has {expected[i]}; the family "
                            f"adapter's token_layout and select disagree"
                        )
                    path = (acts_path if kind == "patch" else extra_path)(site, condition)
                    width = values[0].shape[-1] if size else 0
                    dataset = self._dataset(path, site, kind, width, offsets)
                    flat = values.reshape(-1, width) if dense else torch.cat(list(values))
                    rows = flat.numpy().astype(ACT_DTYPE)  # (tokens, d)
                    if dataset.ndim == 2:  # ragged: flat tokens
                        dataset[offsets[start] : offsets[start + size]] = rows
                    else:
                        dataset[start : start + size] = rows.reshape(size, -1, width)
        self._file.flush()
        self._file.attrs["n_written"] = start + (size or 0)
        self._file.flush()

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
                shape, chunks = (int(offsets[-1]), width), (longest, width)
            else:
                tokens = int(offsets[1] - offsets[0]) if n_images else 0
                shape, chunks = (n_images, tokens, width), (1, tokens, width)
            self._file.create_dataset(path, shape=shape, dtype=ACT_DTYPE, chunks=chunks)
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
