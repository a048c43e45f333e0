"""What a cache holds, in a few lines (``interp info CACHE``): reads attributes only."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from caches.parts import rank_files
from caches.reader import CacheReader
from caches.schema import human_bytes, partial_path
from interp.errors import CacheError

__all__ = ["cache_info", "format_info"]


def cache_info(path: str | os.PathLike) -> dict[str, Any]:
    """Model, prompt, data source, sites, conditions, images, labels, schema version,
    size on disk and state of the cache at ``path`` (or of its unfinished ``.partial``,
    where only that exists: then ``state`` says how far it got)."""
    path = Path(path)
    target = path if path.is_file() or not partial_path(path).is_file() else partial_path(path)
    ranks = rank_files(path)
    if not target.exists() and ranks:
        return _unpublished(path, ranks)
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


def _unpublished(path: Path, ranks: list[Path]) -> dict[str, Any]:
    """What the rank files of a data-parallel extraction that has not published ``path``
    yet say: how far each got."""
    states = {}
    for rank in ranks:
        try:
            with CacheReader(rank, allow_incomplete=True) as reader:
                attrs = reader.attrs
                done, total = int(attrs.get("n_written", 0)), int(attrs.get("n_images", 0))
                states[rank.name] = "complete" if attrs.get("complete") else f"{done} of {total}"
        except CacheError as err:
            states[rank.name] = f"unreadable ({err})"
    return {
        "path": str(path),
        "state": "unfinished data-parallel extraction: not published yet; rerun the same "
        "torchrun command to finish it",
        **{f"rank file {name}": state for name, state in states.items()},
    }
