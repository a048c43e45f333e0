"""What a table was made from (model, weights, images), and the check that tables a step
combines belong together.

Each table a step writes keeps its settings in ``<table>.settings.json`` beside it: the
probe table's name the cache it probed (``cache``), the answers table's name its
``origin`` directly. :func:`origin_of` reads either as one dict, and
:func:`check_same_origin` refuses to combine tables of different origins.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from interp.errors import ConfigError

__all__ = ["ORIGIN_KEYS", "cache_origin", "check_same_origin", "origin_of", "settings_path"]

# What makes two tables' rows comparable: the same model weights and the same images.
ORIGIN_KEYS = ("model", "weights_id", "data", "n_images")


def settings_path(table: str | os.PathLike) -> Path:
    """Where the settings behind a table are kept: ``<table>.settings.json``."""
    table = Path(table)
    return table.with_name(table.name + ".settings.json")


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def cache_origin(attrs: dict[str, Any], n_images: int) -> dict[str, Any]:
    """The origin of tables made from a cache with root attributes ``attrs``."""
    return _plain(
        {
            "model": attrs.get("model"),
            "weights_id": attrs.get("weights_id"),
            "data": attrs.get("data") or {"source": "stimuli", "spec": attrs.get("stimuli")},
            "n_images": int(n_images),
        }
    )


def origin_of(table: str | os.PathLike) -> dict[str, Any] | None:
    """The origin recorded beside ``table`` (None where no settings file says it)."""
    try:
        settings = json.loads(settings_path(table).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if "origin" in settings:
        return _plain(settings["origin"])
    if "cache" in settings and "n_images" in settings:  # a probe table
        return cache_origin(settings["cache"], settings["n_images"])
    return None


def check_same_origin(
    first: str | os.PathLike | dict[str, Any], second: str | os.PathLike | dict[str, Any]
) -> None:
    """A ConfigError unless the tables (or origins) ``first`` and ``second`` come from
    the same model weights and images; a warning where one of them does not say."""
    found = [_origin(x) for x in (first, second)]
    names = [_name(x) for x in (first, second)]
    if any(origin is None for origin in found):
        missing = [name for name, origin in zip(names, found, strict=True) if origin is None]
        warnings.warn(
            f"cannot check that {names[0]} and {names[1]} come from the same model and "
            f"images: no settings file beside {', '.join(missing)} says what it was made from",
            stacklevel=3,
        )
        return
    a, b = found
    for key in ORIGIN_KEYS:
        if a.get(key) != b.get(key):
            raise ConfigError(
                f"{names[0]} and {names[1]} come from different runs: their {key} differs "
                f"({_short(a.get(key))} vs {_short(b.get(key))}); combine tables of one model "
                f"and one set of images"
            )


def _origin(value: str | os.PathLike | dict[str, Any]) -> dict[str, Any] | None:
    return _plain(value) if isinstance(value, dict) else origin_of(value)


def _name(value: str | os.PathLike | dict[str, Any]) -> str:
    return "the cache" if isinstance(value, dict) else repr(str(value))


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."
