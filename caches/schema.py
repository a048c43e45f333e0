"""The cache file layout; ``docs/cache-format.md`` is its prose description.

Paths inside the HDF5 file::

    /                       attrs: see ROOT_ATTRS
    images/pixels           uint8  (n, H, W, 3)    mixed sizes: padded to the largest (absent
                                                   where the attribute ``pixels`` is false)
    images/object_map       int8   (n, H, W)       object index per pixel, -1 = background
    images/size             int32  (n, 2)          (height, width) of each image (top left of
                                                   its row; schema 4: (n,) sides of squares)
    labels/<attribute>      int64 (n,) categorical (attr ``classes``) or float32 (n,)
    objects/<attribute>     int64  (n, max objects) every object's class, -1 = no object
    layout/<site>/boxes     float32 (tokens, 4)    image pixels (y0, x0, y1, x1) of each token
    layout/<site>/crops     int16  (tokens,)       0 = whole image, k = crop k
    layout/<site>/grid      int32  (tokens, 2)     (row, col) in its crop's patch grid
    acts/<site>             float16 (n, tokens, d) baseline activations, one chunk per image
    ablations/<condition>/<site>   same, under an intervention (group attrs describe it)
    extra/<condition>/<site>       float16 (n, k, d) tokens carrying no patch (kinds: the
                                   layout group's attr ``extra``)

A ragged site (images of mixed sizes: a layout per image) stores every image's tokens one
after another: ``layout/<site>/{boxes,crops,grid}`` and ``acts/<site>`` have ``(all
tokens, ...)`` rows, ``layout/<site>/offsets`` int64 ``(n + 1,)`` says where each image
starts; ``layout/<site>/extra_offsets`` and ``extra_kinds`` (int8 index into
``EXTRA_KINDS``) do the same for ``extra/``.

Schema 2 files have ``tokens/grid`` (one grid for every site) instead of ``layout/``.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "SCHEMA_VERSION",
    "ACT_DTYPE",
    "ROOT_ATTRS",
    "MATCH_ATTRS",
    "STORE_DTYPES",
    "BFLOAT16",
    "COMPRESSIONS",
    "BASELINE",
    "acts_path",
    "extra_path",
    "layout_path",
    "human_bytes",
    "partial_path",
]

# 2 added objects/<attribute>; 3 a token layout per site and the non-patch tokens; 4
# images/size and ragged sites; 5 images of any (height, width), token boxes in the
# original image's pixels through the processor (empty: padding). Versions 1 to 4 are
# still read.
SCHEMA_VERSION = 5
ACT_DTYPE = "float16"  # the default storage dtype of activations
BASELINE = "baseline"

# Root attributes every complete cache has (JSON-encoded where not scalar).
ROOT_ATTRS = (
    "schema_version",  # int
    "toolkit_version",  # str
    "model",  # the path or hub id given to from_pretrained
    "model_family",  # adapter family, e.g. "LLaVA-1.5"
    "prompt",  # the exact text given to the processor
    "stimuli",  # JSON: the StimulusSpec where the data are the built-in stimuli, else {}
    "data",  # JSON: where the images came from (source, path, table hash, columns, ...)
    "sites",  # JSON list, depth order
    "conditions",  # JSON list, "baseline" first
    "patch_grid",  # JSON [rows, cols]
    "dtype",  # the model's parameter dtype during extraction, e.g. "float32"
    "weights_id",  # sha256 of the weight files' names, sizes, headers and config.json
    "processor_id",  # sha256 of the processor and tokenizer files
    "store_dtype",  # "float16", "bfloat16" or "float32": how activations are stored
    "pixels",  # bool: images/pixels holds the images (store_pixels)
    "vision_tokens",  # how sites were cut to patch tokens, and where the others went
    "n_images",  # int
    "n_written",  # int: images fully written (resume point)
    "static_complete",  # bool: images, labels and layouts are all on disk
    "complete",  # bool: extraction finished
)
# Attributes that must agree for an unfinished cache to be resumed, or a finished one to be
# reused: the same data, model (weights, processor, dtype), prompt, sites and storage.
MATCH_ATTRS = (
    "schema_version",
    "toolkit_version",
    "model",
    "weights_id",
    "processor_id",
    "dtype",
    "prompt",
    "stimuli",
    "data",
    "sites",
    "conditions",
    "patch_grid",
    "store_dtype",
    "pixels",
    "compression",
    "part",  # a rank file of a data-parallel extraction: which images (caches.parts)
)
STORE_DTYPES = ("float16", "bfloat16", "float32")
# HDF5 has no bfloat16: such activations are stored as their raw 16 bits (uint16) with the
# dataset attribute ``encoding = "bfloat16"``; a value's float32 is those bits shifted
# left by 16 (lossless), which is what CacheReader returns.
BFLOAT16 = "bfloat16"
# How activation datasets may be compressed (h5py filters; readers decompress unasked):
# none, lzf (fast), gzip (level 1).
COMPRESSIONS = ("none", "lzf", "gzip")


def acts_path(site: str, condition: str = BASELINE) -> str:
    """Dataset path of ``site`` under ``condition``."""
    if condition == BASELINE:
        return f"acts/{site}"
    return f"ablations/{condition}/{site}"


def extra_path(site: str, condition: str = BASELINE) -> str:
    """Dataset path of the tokens of ``site`` that carry no patch (CLS, registers, newlines)."""
    return f"extra/{condition}/{site}"


def layout_path(site: str) -> str:
    """Group path of the token layout of ``site``."""
    return f"layout/{site}"


def partial_path(path: str | os.PathLike) -> Path:
    """Where a cache is written until it is complete: ``<path>.partial``."""
    path = Path(path)
    return path.with_name(path.name + ".partial")


def human_bytes(count: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    return f"{count:.1f} TiB"
