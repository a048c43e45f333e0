"""What a cache holds, in a few lines (``interp info CACHE``): reads attributes only."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from caches.reader import CacheReader
from caches.schema import human_bytes, partial_path

__all__ = ["cache_info", "format_info"]


def cache_info(path: str | os.PathLike) -> dict[str, Any]:
    """Model, prompt, data source, sites, conditions, images, labels, schema version,
    size on disk and state of the cache at ``path`` (or of its unfinished ``.partial``,
    where only that exists: then ``state`` says how far it got)."""
    path = Path(path)
    target = path if path.is_file() else partial_path(path)
    with CacheReader(target, allow_incomplete=True) as reader:
        attrs = reader.attrs
        n_images, n_written = int(attrs.get("n_images", 0)), int(attrs.get("n_written", 0))
        complete = bool(attrs.get("complete", False))
        data = attrs.get("data") or {}
        return {
            "path": str(target),
            "state": (
                "complete"
                if complete
                else f"unfinished: {n_written} of {n_images} images; rerun the same "
                f"extraction to resume"
            ),
            "model": attrs.get("model"),
            "family": attrs.get("model_family"),
            "dtype": attrs.get("dtype"),
            "prompt": attrs.get("prompt"),
            "data": data.get("path") or data.get("source", "stimuli"),
            "images": n_images,
            "sites": reader.sites,
            "conditions": reader.conditions,
            "labels": reader.label_names,
            "object labels": reader.object_label_names,
            "pixels stored": reader.has_pixels,
            "store dtype": attrs.get("store_dtype", "float16"),
            "schema version": int(attrs.get("schema_version", 0)),
            "toolkit version": attrs.get("toolkit_version", "unknown"),
            "size on disk": human_bytes(target.stat().st_size),
        }


def format_info(info: dict[str, Any]) -> str:
    """One ``key: value`` line per entry (lists joined by spaces)."""
    width = max(len(key) for key in info)
    lines = []
    for key, value in info.items():
        shown = " ".join(map(str, value)) if isinstance(value, list) else value
        lines.append(f"{key + ':':{width + 1}s} {shown}")
    return "\n".join(lines)
