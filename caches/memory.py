"""Activations held in memory: what the probes read from a cache file, without the file.

:class:`ActivationSet` is the small protocol the probes (``probes.sweep``,
``probes.pixel_sweep``) read through; :class:`caches.CacheReader` is one, and
:class:`MemoryCache` (made by :func:`caches.capture_set`) is another, so a notebook can
probe fifty images without writing a file. Values stay float32 (a cache stores float16
by default, so the two agree to float16's precision).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from caches.schema import BASELINE
from caches.tokens import SiteTokens
from interp.errors import CacheError, SiteError
from interp.layout import TokenLayout

__all__ = ["ActivationSet", "MemoryCache"]


@runtime_checkable
class ActivationSet(Protocol):
    """What a probe reads: sites and conditions, each site's tokens and layout, labels,
    object maps and (for the pixel probe) images."""

    path: Any

    @property
    def sites(self) -> list[str]: ...

    @property
    def conditions(self) -> list[str]: ...

    @property
    def n_written(self) -> int: ...

    @property
    def label_names(self) -> list[str]: ...

    def labels(self, name: str) -> np.ndarray: ...

    def label_classes(self, name: str) -> list[str] | None: ...

    @property
    def object_label_names(self) -> list[str]: ...

    def object_labels(self, name: str) -> np.ndarray: ...

    def layout(self, site: str, image: int | None = None) -> TokenLayout: ...

    def offsets(self, site: str) -> np.ndarray: ...

    def is_ragged(self, site: str) -> bool: ...

    def site_tokens(self, site: str, condition: str = BASELINE) -> SiteTokens: ...

    def same_as_baseline(self, site: str, condition: str) -> bool: ...


@dataclass
class MemoryCache:
    """Captured activations in memory (see :func:`caches.capture_set`): ``tokens`` maps
    ``(site, condition)`` to :class:`caches.SiteTokens`; ``layouts`` maps a site to one
    layout per image; the rest are the data's images, object maps, sizes and labels."""

    tokens: dict[tuple[str, str], SiteTokens]
    layouts: dict[str, list[TokenLayout]]
    images: np.ndarray  # (n, H, W, 3) uint8
    object_map: np.ndarray  # (n, H, W) int8
    image_sizes: np.ndarray  # (n, 2) (height, width)
    label_values: dict[str, np.ndarray]
    classes: dict[str, tuple[str, ...]]
    object_values: dict[str, np.ndarray]
    attrs: dict[str, Any] = field(default_factory=dict)
    path: str = "<memory>"
    has_pixels: bool = True

    @property
    def sites(self) -> list[str]:
        return list(self.layouts)

    @property
    def conditions(self) -> list[str]:
        return list(dict.fromkeys(condition for _, condition in self.tokens))

    @property
    def n_written(self) -> int:
        return len(self.images)

    @property
    def label_names(self) -> list[str]:
        return sorted(self.label_values)  # as a cache file lists them

    def labels(self, name: str) -> np.ndarray:
        return self.label_values[name]

    def label_classes(self, name: str) -> list[str] | None:
        return list(self.classes[name]) if name in self.classes else None

    @property
    def object_label_names(self) -> list[str]:
        return sorted(self.object_values)

    def object_labels(self, name: str) -> np.ndarray:
        if name not in self.object_values:
            raise CacheError(f"no per-object labels {name!r}; they are {self.object_label_names}")
        return self.object_values[name]

    def _check(self, site: str, condition: str = BASELINE) -> None:
        if site not in self.layouts:
            raise SiteError(f"no site {site!r} captured; sites: {', '.join(self.sites)}")
        if (site, condition) not in self.tokens:
            raise CacheError(f"no condition {condition!r} captured; conditions: {self.conditions}")

    def is_ragged(self, site: str) -> bool:
        self._check(site)
        return len({len(x) for x in self.layouts[site]}) > 1 or not _same(self.layouts[site])

    def layout(self, site: str, image: int | None = None) -> TokenLayout:
        self._check(site)
        layouts = self.layouts[site]
        if image is not None:
            return layouts[image]
        return layouts[0] if not self.is_ragged(site) else TokenLayout.concat(layouts)

    def offsets(self, site: str) -> np.ndarray:
        self._check(site)
        counts = [len(x) for x in self.layouts[site]]
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def site_tokens(self, site: str, condition: str = BASELINE) -> SiteTokens:
        self._check(site, condition)
        return self.tokens[(site, condition)]

    def same_as_baseline(self, site: str, condition: str) -> bool:
        self._check(site, condition)
        ours, base = self.tokens[(site, condition)], self.tokens[(site, BASELINE)]
        return np.array_equal(ours.values, base.values)


def _same(layouts: Sequence[TokenLayout]) -> bool:
    first = layouts[0]
    return all(np.array_equal(x.boxes, first.boxes) for x in layouts[1:])
