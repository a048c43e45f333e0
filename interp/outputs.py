"""Where a command's outputs go: proved writable before any model is loaded (light:
imports nothing but the error classes, so every package can check its own outputs)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from interp.errors import ConfigError

__all__ = ["check_output_folder"]


def check_output_folder(folder: str | os.PathLike) -> Path:
    """Prove ``folder`` writable, or creatable, before any model is loaded (it is made
    only when there is something to write): a ConfigError when it is a file, lies under a
    file, or cannot be written."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(
            f"out={str(folder)!r} is an existing file; the output is a folder: choose "
            f"another out=FOLDER"
        )
    parent = folder
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(
            f"out={str(folder)!r} lies under {str(parent)!r}, which is a file, not a folder; "
            f"choose another out=FOLDER"
        )
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as err:
        raise ConfigError(
            f"cannot write in out={str(folder)!r}: {err.strerror or err}; choose a folder you "
            f"can write to (out=FOLDER)"
        ) from err
    return folder
