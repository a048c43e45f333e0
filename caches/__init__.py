"""The HDF5 activation store: write (and resume) during extraction, read lazily after."""

from caches.extraction import DEFAULT_QUESTION, extract
from caches.reader import CacheReader
from caches.schema import BASELINE, SCHEMA_VERSION, acts_path
from caches.tokens import SiteTokens
from caches.writer import CacheWriter

__all__ = [
    "BASELINE",
    "DEFAULT_QUESTION",
    "SCHEMA_VERSION",
    "CacheReader",
    "CacheWriter",
    "SiteTokens",
    "acts_path",
    "extract",
]
