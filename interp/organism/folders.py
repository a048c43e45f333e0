"""The folders training runs save models into: checked before any training (writable,
room for the weights, not holding a model unless overwritten, not the run's own start),
written apart (``<out>.partial``) and moved into place only when finished, so a run
stopped or failed part-way never leaves a folder that looks like a model."""

from __future__ import annotations

import errno
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from interp.errors import ConfigError, DiskFullError, OutputExistsError
from interp.outputs import check_output_folder

__all__ = ["check_model_folder", "staged_folder", "MIN_ROOM"]

log = logging.getLogger("interp")

MIN_ROOM = 16 * 2**20  # bytes a built-in model's folder needs at the least


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def check_model_folder(out: str | os.PathLike, overwrite: bool, start: str | None = None) -> Path:
    """The folder ``out`` a run will save a model into, or an error before any work: it
    holds a model (unless ``overwrite``), it is the run's ``start`` model, it cannot be
    written, or its disk has no room for a model the size of ``start``."""
    folder = Path(out)
    if str(out).strip() == "":
        raise ConfigError("out must name a folder for the model, got an empty string")
    if start is not None and Path(start).exists() and folder.resolve() == Path(start).resolve():
        raise ConfigError(
            f"out={str(out)!r} is the model this run starts from; write the new model into "
            f"another folder (the start must stay as it is while it is read)"
        )
    if (folder / "config.json").exists() and not overwrite:
        if any(folder.glob("*.safetensors")):
            raise OutputExistsError(
                f"{folder} already holds a model; pass overwrite=True to replace it"
            )
        raise OutputExistsError(
            f"{folder} holds a model's config but no weights (a run that failed while "
            f"saving); pass overwrite=True to replace it"
        )
    check_output_folder(folder)  # a folder, or one that can be made, and writable
    parent = folder
    while not parent.exists():
        parent = parent.parent
    needed = max(MIN_ROOM, _size(Path(start)) if start is not None else 0)
    free = shutil.disk_usage(parent).free
    if free < needed:
        raise DiskFullError(
            f"the disk of out={str(out)!r} has {free / 2**20:.1f} MiB free, and the model "
            f"needs about {needed / 2**20:.1f} MiB; free space there or choose another out"
        )
    return folder


@contextmanager
def staged_folder(folder: Path) -> Iterator[Path]:
    """Write into ``<folder>.partial`` (an unfinished one left by a stopped run is started
    over, and said so); on success it replaces ``folder``. A write that fails for lack
    of room or permission removes the partial folder and says what to do."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".partial")
    if tmp.exists():
        log.warning("starting over: %s was left by a run stopped before it finished", tmp)
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except Exception as err:
        full = isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)
        if full or "No space left" in str(err) or "os error 28" in str(err):
            shutil.rmtree(tmp, ignore_errors=True)
            raise DiskFullError(
                f"could not write the model into {folder}: its disk is full; free space "
                f"there or choose another out, and run again (nothing was left behind)"
            ) from err
        raise
    _readable(tmp)
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)


def _readable(folder: Path) -> None:
    """Every file as the user's umask makes new files (some writers use 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    for path in [folder, *folder.rglob("*")]:
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)
