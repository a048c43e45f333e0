"""The HDF5 activation store: write (and resume) during extraction, read lazily after."""

from caches.info import cache_info, format_info
from caches.memory import ActivationSet, MemoryCache
from caches.parts import consolidate
from caches.reader import CacheReader
from caches.schema import BASELINE, SCHEMA_VERSION, acts_path
from caches.tokens import SiteTokens
from interp.lazy import lazy_exports

# Writing imports torch and the capture (nnsight); reading does not.
__getattr__ = lazy_exports(
    __name__,
    {
        "DEFAULT_QUESTION": "caches.extraction",
        "extract": "caches.extraction",
        "capture_set": "caches.extraction",
        "CacheWriter": "caches.writer",
    },
)

__all__ = [
    "ActivationSet",
    "BASELINE",
    "DEFAULT_QUESTION",
    "SCHEMA_VERSION",
    "CacheReader",
    "CacheWriter",
    "MemoryCache",
    "SiteTokens",
    "acts_path",
    "cache_info",
    "capture_set",
    "consolidate",
    "extract",
    "format_info",
]
