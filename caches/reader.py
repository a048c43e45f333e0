"""Read a cache lazily: datasets stay on disk until sliced."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from caches.blocks import encoding_of, images_per_step, read_rows, stored_blocks, widen
from caches.encoding import BFloat16Dataset, decoded
from caches.parts import check_parts
from caches.schema import (
    ACT_DTYPE,
    BASELINE,
    SCHEMA_VERSION,
    acts_path,
    extra_path,
    layout_path,
)
from caches.tokens import SiteTokens
from interp.errors import CacheError, SiteError
from interp.layout import EXTRA_KINDS, TokenLayout

__all__ = ["CacheReader", "locked_elsewhere"]


def locked_elsewhere(err: OSError) -> bool:
    """Whether opening an HDF5 file failed because another process holds it (HDF5's file
    lock), not because the file is damaged."""
    return err.errno == errno.EAGAIN or "unable to lock file" in str(err)


class CacheReader:
    """An open cache file. Use as a context manager, or call :meth:`close`."""

    def __init__(self, path: str | os.PathLike, *, allow_incomplete: bool = False) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            inside = sorted(p.name for p in self.path.glob("*.h5"))
            raise CacheError(
                f"{self.path} is a folder, not a cache file; pass the cache file itself"
                + (f" (it holds {', '.join(inside)})" if inside else "")
            )
        if not self.path.is_file():
            raise CacheError(f"no cache at {self.path}; pass the file an extraction wrote")
        if not h5py.is_hdf5(self.path):
            raise CacheError(
                f"{self.path} is not an HDF5 file, so not an activation cache; pass the file "
                f"an extraction wrote"
            )
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as err:
            if locked_elsewhere(err):
                raise CacheError(
                    f"{self.path} is in use by another process that is writing it (an "
                    f"extraction); wait for it to finish, then read it"
                ) from err
            raise CacheError(
                f"{self.path} is not a readable HDF5 file ({err}); it may be truncated or "
                f"corrupt: re-create it (overwrite=True)"
            ) from err
        attrs = self._file.attrs
        version = attrs.get("schema_version")
        if version is None or "sites" not in attrs:
            self._file.close()
            raise CacheError(f"{self.path} is an HDF5 file but not an activation cache")
        if int(version) > SCHEMA_VERSION:
            self._file.close()
            raise CacheError(
                f"{self.path} has schema_version {int(version)}, this toolkit reads up to "
                f"{SCHEMA_VERSION}; upgrade vlm-interp"
            )
        if not bool(attrs.get("complete", False)) and not allow_incomplete:
            self._file.close()
            raise CacheError(
                f"{self.path} is incomplete ({int(attrs.get('n_written', 0))} of "
                f"{int(attrs.get('n_images', 0))} images); resume the run that made it, "
                f"or pass allow_incomplete=True to read what is there"
            )
        missing = [name for name in self._required() if name not in self._file]
        if missing:
            self._file.close()
            raise CacheError(
                f"{self.path} has the attributes of an activation cache but lacks "
                f"{', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}; it is damaged "
                f"or was not written by vlm-interp: re-create it (overwrite=True)"
            )
        try:  # a cache over the rank files of a data-parallel extraction needs them all
            check_parts(self.path, self._file)
        except CacheError:
            self._file.close()
            raise

    def _required(self) -> list[str]:
        """Datasets every cache has (activations only as far as they are written)."""
        required = ["images/object_map", "labels"]
        if self._file.attrs.get("pixels", True):
            required.append("images/pixels")
        if int(self._file.attrs.get("n_written", 0)) > 0:
            required += [
                acts_path(site, condition) for condition in self.conditions for site in self.sites
            ]
        return required

    # ----- metadata --------------------------------------------------------------------
    @property
    def attrs(self) -> dict[str, Any]:
        out = {}
        for key, value in self._file.attrs.items():
            if isinstance(value, str) and value[:1] and value[:1] in "[{":
                value = json.loads(value)
            out[key] = value.item() if isinstance(value, np.generic) else value
        return out

    @property
    def stored_attrs(self) -> dict[str, Any]:
        """The root attributes as stored (JSON ones as strings), for comparing settings."""
        return dict(self._file.attrs)

    @property
    def sites(self) -> list[str]:
        return json.loads(self._file.attrs["sites"])

    @property
    def conditions(self) -> list[str]:
        return json.loads(self._file.attrs["conditions"])

    @property
    def patch_grid(self) -> tuple[int, int]:
        """(rows, cols) of the model's patch grid for one image."""
        rows, cols = json.loads(self._file.attrs["patch_grid"])
        return int(rows), int(cols)

    @property
    def n_images(self) -> int:
        return int(self._file.attrs["n_images"])

    @property
    def n_written(self) -> int:
        return int(self._file.attrs["n_written"])

    def intervention(self, condition: str) -> dict[str, Any]:
        if condition == BASELINE:
            return {}
        return json.loads(self._file[f"ablations/{condition}"].attrs["intervention"])

    # ----- data ------------------------------------------------------------------------
    @property
    def images(self) -> h5py.Dataset:
        """``(n, H, W, 3)`` uint8, lazy; a CacheError where the cache holds no pixels."""
        if not self.has_pixels:
            raise CacheError(
                f"{self.path} holds no pixels (extracted with store_pixels=False); the "
                f"pixel probe needs them: extract again with store_pixels=True"
            )
        return self._file["images/pixels"]

    @property
    def has_pixels(self) -> bool:
        """Whether the images themselves are stored (``store_pixels``)."""
        return "images/pixels" in self._file

    @property
    def object_map(self) -> h5py.Dataset:
        return self._file["images/object_map"]

    @property
    def image_sizes(self) -> np.ndarray:
        """``(n, 2)`` (height, width) in px of each image: the top-left part of its padded
        array (schema 4 files store a side per square image; older ones none: all of it)."""
        if "images/size" not in self._file:
            shape = self.object_map.shape[1:3]
            return np.tile(np.asarray(shape, dtype=np.int64), (self.n_images, 1))
        sizes = self._file["images/size"][()].astype(np.int64)
        return np.stack([sizes, sizes], axis=1) if sizes.ndim == 1 else sizes

    def is_ragged(self, site: str) -> bool:
        """Whether ``site`` is stored ragged (flat tokens plus per-image offsets)."""
        self._check_site(site)
        group = self._file.get(layout_path(site))
        return group is not None and "offsets" in group

    def offsets(self, site: str) -> np.ndarray:
        """``(n + 1,)`` int64: image ``i``'s tokens of ``site`` are rows
        ``offsets[i]:offsets[i + 1]`` of the flat token order (dense sites too)."""
        if self.is_ragged(site):
            return self._file[layout_path(site)]["offsets"][()].astype(np.int64)
        tokens = len(self.layout(site))
        return np.arange(self.n_images + 1, dtype=np.int64) * tokens

    def extra_offsets(self, site: str) -> np.ndarray:
        """As :meth:`offsets`, for the tokens that carry no patch."""
        if self.is_ragged(site):
            return self._file[layout_path(site)]["extra_offsets"][()].astype(np.int64)
        return np.arange(self.n_images + 1, dtype=np.int64) * len(self.layout(site).extra)

    def layout(self, site: str, image: int | None = None) -> TokenLayout:
        """Where each stored token of ``site`` comes from (see :class:`TokenLayout`).

        A dense site has one layout for every image. A ragged one has one per image:
        ``image`` picks it; without ``image`` the result covers every token of every
        image in flat order (cut it with :meth:`offsets`).
        """
        self._check_site(site)
        if image is not None:
            self._check_image(image)
        if layout_path(site) in self._file:
            group = self._file[layout_path(site)]
            if "offsets" not in group:
                return TokenLayout(
                    boxes=group["boxes"][()],
                    crops=group["crops"][()],
                    grid=group["grid"][()],
                    extra=tuple(json.loads(group.attrs["extra"])),
                )
            rows = kinds = slice(None)
            if image is not None:
                rows = slice(*self._span(group["offsets"], image))
                kinds = slice(*self._span(group["extra_offsets"], image))
            return TokenLayout(
                boxes=group["boxes"][rows],
                crops=group["crops"][rows],
                grid=group["grid"][rows],
                extra=tuple(EXTRA_KINDS[k] for k in group["extra_kinds"][kinds]),
            )
        # schema <= 2: one grid for every site, non-patch tokens not kept
        grid = self._file["tokens/grid"][()]  # (tokens, 2)
        rows, cols = self.patch_grid
        size = self.images.shape[1]
        full = TokenLayout.regular(rows, cols, size)
        return full.take(grid[:, 0] * cols + grid[:, 1])

    def _check_image(self, image: int) -> None:
        if not isinstance(image, (int, np.integer)) or not 0 <= image < self.n_images:
            raise CacheError(
                f"image must be an index in 0..{self.n_images - 1} of {self.path}, got {image!r}"
            )

    def _span(self, offsets: h5py.Dataset, image: int) -> tuple[int, int]:
        self._check_image(image)
        lo, hi = offsets[image : image + 2]
        return int(lo), int(hi)

    @property
    def label_names(self) -> list[str]:
        return list(self._file["labels"].keys())

    def labels(self, name: str) -> np.ndarray:
        if name not in self._file["labels"]:
            raise CacheError(f"no label {name!r} in {self.path}; labels: {self.label_names}")
        return self._file[f"labels/{name}"][()]

    @property
    def object_label_names(self) -> list[str]:
        """Attributes labelled for every object (empty in a schema-1 cache)."""
        return list(self._file["objects"].keys()) if "objects" in self._file else []

    def object_labels(self, name: str) -> np.ndarray:
        """``(n, max objects)`` class of every object (column = index in ``object_map``),
        -1 where an image has fewer objects."""
        if name not in self.object_label_names:
            if not self.object_label_names:
                raise CacheError(
                    f"{self.path} has no per-object labels (written by schema version "
                    f"{int(self._file.attrs['schema_version'])}); re-create it with "
                    f"overwrite=True to probe single tokens"
                )
            raise CacheError(
                f"no per-object label {name!r} in {self.path}; per-object labels: "
                f"{self.object_label_names}"
            )
        return self._file[f"objects/{name}"][()]

    def label_classes(self, name: str) -> list[str] | None:
        """Class names of a categorical label, None for a continuous one."""
        raw = self._file[f"labels/{name}"].attrs.get("classes")
        return json.loads(raw) if raw is not None else None

    def _check_site(self, site: str, condition: str = BASELINE) -> None:
        if site not in self.sites:
            raise SiteError(f"no site {site!r} in {self.path}; sites: {', '.join(self.sites)}")
        if condition not in self.conditions:
            raise CacheError(
                f"no condition {condition!r} in {self.path}; conditions: {self.conditions}"
            )

    def acts(self, site: str, condition: str = BASELINE) -> h5py.Dataset | BFloat16Dataset:
        """The lazy dataset of ``site`` under ``condition`` (float16 or float32 as stored;
        bfloat16 reads as float32, exactly): its patch tokens, in the order of
        :meth:`layout`; ``(n, tokens, d)``, or ``(all tokens, d)`` where the site is ragged
        (:meth:`offsets` cuts it into images)."""
        self._check_site(site, condition)
        return decoded(self._file[acts_path(site, condition)])

    def extra_acts(
        self, site: str, condition: str = BASELINE
    ) -> h5py.Dataset | BFloat16Dataset | None:
        """The lazy tokens of ``site`` that carry no patch (``(n, k, d)``, or flat where
        ragged; their kinds: ``layout(site).extra``), or None where there are none."""
        self._check_site(site, condition)
        return decoded(self._file.get(extra_path(site, condition)))

    def same_as_baseline(self, site: str, condition: str, chunk: int = 256) -> bool:
        """Whether ``site``'s stored activations under ``condition`` equal the baseline's
        bit for bit (an intervention downstream of the site leaves it untouched), compared
        ``chunk`` rows at a time."""
        ours, base = self.acts(site, condition), self.acts(site, BASELINE)
        ours, base = getattr(ours, "raw", ours), getattr(base, "raw", base)  # stored bits
        if ours.shape != base.shape or ours.dtype != base.dtype:
            return False
        rows = self.n_written if ours.ndim == 3 else int(self.offsets(site)[self.n_written])
        return all(
            np.array_equal(ours[start : start + chunk], base[start : start + chunk])
            for start in range(0, rows, chunk)
        )

    def site_tokens(
        self,
        site: str,
        condition: str = BASELINE,
        chunk: int | None = None,
        dtype: Any = np.float32,
    ) -> SiteTokens:
        """Every written image's patch tokens of ``site``, flat, in memory (dense and
        ragged sites alike), read ``chunk`` images at a time (default: about 64 MiB of
        stored values per step, so the stored copy never exists whole).

        ``dtype``: float32 (the default; bfloat16 widens exactly), or float16 for a site
        stored as float16 (half the memory, read straight into place at the storage's
        speed)."""
        raw, n, offsets = self._stored(site, condition)
        dtype = np.dtype(dtype)
        if dtype != np.float32 and not (dtype == np.float16 and raw.dtype == np.float16):
            raise CacheError(
                f"dtype must be float32, or float16 for a site stored as float16; site "
                f"{site!r} of {self.path} is stored as {self.store_dtype}, dtype={dtype.name} "
                f"was asked: pass dtype=np.float32"
            )
        values = np.empty((int(offsets[-1]), raw.shape[-1]), dtype=dtype)  # (tokens, d)
        if raw.dtype == dtype:  # as stored: straight into place
            step = chunk or images_per_step(raw, offsets)
            for start in range(0, n, step):
                stop = min(n, start + step)
                read_rows(raw, start, stop, offsets, values[offsets[start] : offsets[stop]])
            return SiteTokens(values, offsets)
        encoding = encoding_of(raw)
        for start, stop, block in stored_blocks(raw, offsets, n, chunk):
            widen(block, encoding, values[offsets[start] : offsets[stop]])
        return SiteTokens(values, offsets)

    def _stored(self, site: str, condition: str) -> tuple[h5py.Dataset, int, np.ndarray]:
        """``site``'s dataset under ``condition`` as stored, the images written, and their
        ``(n + 1,)`` token offsets."""
        self._check_site(site, condition)
        n = self.n_written
        return self._file[acts_path(site, condition)], n, self.offsets(site)[: n + 1]

    @property
    def store_dtype(self) -> str:
        """How the cache stores activations (float16, bfloat16 or float32)."""
        return str(self._file.attrs.get("store_dtype", ACT_DTYPE))

    def site_array(
        self, site: str, condition: str = BASELINE, chunk: int | None = None
    ) -> np.ndarray:
        """``(n_written, tokens, d)`` float32 in memory; a CacheError for a ragged site
        (use :meth:`site_tokens`)."""
        if self.is_ragged(site):
            raise CacheError(
                f"site {site!r} of {self.path} is stored ragged (images have different "
                f"token counts); read it with site_tokens(), which gives flat tokens and "
                f"per-image offsets"
            )
        return self.site_tokens(site, condition, chunk).dense()

    def mean_pooled(
        self, site: str, condition: str = BASELINE, chunk: int | None = None
    ) -> np.ndarray:
        """``(n_written, d)`` float32 mean over each image's tokens, read ``chunk`` images
        at a time (default: about 64 MiB of stored values per step)."""
        raw, n, offsets = self._stored(site, condition)
        out = np.empty((n, raw.shape[-1]), dtype=np.float32)
        widened = None  # (rows, d) float32, reused from step to step
        encoding = encoding_of(raw)
        for start, stop, block in stored_blocks(raw, offsets, n, chunk):
            if widened is None or len(widened) < len(block):
                widened = np.empty(block.shape, np.float32)
            values = widened[: len(block)]
            widen(block, encoding, values)
            local = offsets[start : stop + 1] - offsets[start]
            if (np.diff(local) == local[1]).all():  # one token count: one reduction
                values.reshape(stop - start, -1, values.shape[-1]).mean(axis=1, out=out[start:stop])
                continue
            for i in range(stop - start):
                out[start + i] = values[local[i] : local[i + 1]].mean(axis=0)
        return out

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()

    def __enter__(self) -> CacheReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
