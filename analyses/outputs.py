"""Writing result files: never over an existing file unasked, never half-written."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from PIL import Image

from interp.errors import OutputExistsError
from interp.outputs import check_output_folder

__all__ = [
    "check_writable",
    "check_output_folder",
    "remove_outputs",
    "publish",
    "write_atomic",
    "write_table",
    "write_figure",
    "write_figures",
    "write_picture",
]

log = logging.getLogger("interp")


def remove_outputs(paths: Iterable[Path], why: str) -> list[Path]:
    """Delete the files of ``paths`` that exist, and say so (``why``)."""
    removed = [Path(p) for p in paths if Path(p).exists()]
    for path in removed:
        path.unlink()
    if removed:
        log.warning("removed %s: %s", why, ", ".join(str(p) for p in removed))
    return removed


def publish(staging: Path, folder: Path) -> list[Path]:
    """Move every file of ``staging`` into ``folder`` (same file system: renames), then
    remove ``staging``; outputs written apart appear together."""
    moved = []
    for path in sorted(staging.iterdir()):
        os.replace(path, folder / path.name)
        moved.append(folder / path.name)
    shutil.rmtree(staging, ignore_errors=True)
    return moved


def check_writable(paths: Iterable[Path], overwrite: bool) -> None:
    """Refuse up front (before any work) if an output exists and overwrite is off."""
    existing = [str(p) for p in paths if Path(p).exists()]
    if existing and not overwrite:
        raise OutputExistsError(
            f"output already exists: {', '.join(existing)}; pass overwrite=True to replace, "
            f"or choose another out=FOLDER"
        )


def write_atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` then rename ``tmp`` onto ``path`` (same folder, atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_table(table: pd.DataFrame, path: Path) -> Path:
    return write_atomic(path, lambda tmp: table.to_csv(tmp, index=False))


def write_figure(fig: go.Figure, path: Path) -> Path:
    """``.html`` -> self-contained page; ``.png``/``.pdf``/``.svg`` -> static (kaleido)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".html":
        return write_atomic(
            path, lambda tmp: fig.write_html(tmp, include_plotlyjs=True, full_html=True)
        )
    return write_atomic(path, lambda tmp: fig.write_image(tmp, format=suffix.lstrip(".")))


def write_figures(fig: go.Figure, paths: dict[str, Path], key: str) -> list[Path]:
    """Write ``fig`` to every path of ``paths`` whose key is ``key.<format>``."""
    return [write_figure(fig, path) for name, path in paths.items() if name.startswith(f"{key}.")]


def write_picture(picture: Image.Image, path: Path) -> Path:
    """A PIL image as PNG (no browser needed, unlike plotly's static export)."""
    return write_atomic(path, lambda tmp: picture.save(tmp, format="PNG"))
