"""Lists of names (sites, conditions, selections, attributes) given in the Python API."""

from __future__ import annotations

from collections.abc import Iterable

from interp.errors import ConfigError

__all__ = ["as_names"]


def as_names(value: str | Iterable[str] | None, parameter: str) -> list[str] | None:
    """``value`` as a list of distinct names in their first order: a single string is a
    list of one (not its characters); None stays None; anything else but strings is a
    ConfigError naming ``parameter``."""
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    try:
        names = list(value)
    except TypeError:
        names = None
    if names is None or not all(isinstance(name, str) for name in names):
        raise ConfigError(f"{parameter} must be a name or a list of names, got {value!r}")
    return list(dict.fromkeys(names))
