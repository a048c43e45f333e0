"""The toolkit's one exception hierarchy.

Every error a user can trigger derives from :class:`InterpError`, so notebooks can
catch one class and the command line can print a one-line message and exit non-zero.
Messages name what was expected, what was found, and the fix.
"""

from __future__ import annotations

__all__ = [
    "InterpError",
    "ConfigError",
    "ModelLoadError",
    "UnsupportedModelError",
    "SiteError",
    "InterventionError",
    "CacheError",
    "DiskFullError",
    "OutputExistsError",
]


class InterpError(Exception):
    """Base class of every error raised on purpose by this toolkit."""


class ConfigError(InterpError, ValueError):
    """A configuration value is out of range or inconsistent."""


class ModelLoadError(InterpError):
    """A model or processor could not be loaded from the given path or hub id."""


class UnsupportedModelError(InterpError):
    """No registered adapter knows this model family."""


class SiteError(InterpError, KeyError):
    """A capture-site name is malformed or does not exist in this model."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InterventionError(InterpError):
    """An intervention cannot be applied to this model or these inputs."""


class CacheError(InterpError):
    """An activation cache is missing, corrupt, incomplete or incompatible."""


class DiskFullError(CacheError):
    """A cache could not be written: its disk is full. The unfinished file stays as it
    was after its last complete batch, and the same command resumes it.

    ``failed_write``: HDF5 itself failed to write (the disk filled during a write), so
    the open file cannot be closed cleanly; False when the lack of room was found first.
    """

    def __init__(self, message: str, *, failed_write: bool = False) -> None:
        super().__init__(message)
        self.failed_write = failed_write


class OutputExistsError(InterpError, FileExistsError):
    """An output file exists and overwriting was not asked for."""
