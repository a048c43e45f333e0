"""``interp pixels``: cache -> the pixel-value probe: reconstruction error by depth and a picture
grid."""

from __future__ import annotations

from dataclasses import dataclass

from analyses.commands.command import Command, StepResult
from analyses.commands.options import _Conditions, _Folds, _Run, _Sites, check_named
from analyses.files import (
    PIXEL_FILES,
)
from analyses.outputs import (
    check_output_folder,
    check_writable,
    write_picture,
    write_table,
)
from analyses.pictures import reconstruction_grid
from caches import CacheReader
from interp.options import option
from probes import pixel_sweep


@dataclass
class PixelConfig(_Run, _Sites, _Conditions, _Folds):
    """``interp pixels``: the pixel-value probe of every site of ``cache``: its table and
    the picture grid of held-out reconstructions, into the folder ``out``."""

    cache: str = option("the cache to probe", default="", positional=True)
    out: str = option("output folder", default="pixels")

    def check(self) -> None:
        super().check()
        check_named(self.cache, "cache", "a cache file (interp extract writes one)")
        check_named(self.out, "out", "an output folder")


def pixel_step(config: PixelConfig) -> StepResult:
    """The pixel-value probe of every site of ``config.cache``: the table and the picture
    grid of held-out reconstructions, written into the folder ``config.out``: the table
    ``pixels`` (reconstruction error by depth, probe-table columns) and the pictures
    (``pictures``: "original" and each site -> ``(k, H, W, 3)`` uint8)."""
    folder = check_output_folder(config.out)
    paths = {key: folder / name for key, name in PIXEL_FILES.items()}
    check_writable(paths.values(), config.overwrite)
    with CacheReader(config.cache) as reader:
        reader.images  # noqa: B018  (a cache without pixels says so, and how to get them)
        table, shown = pixel_sweep(
            reader,
            sites=config.sites,
            conditions=config.conditions or ["baseline"],
            n_splits=config.n_splits,
            seed=config.seed,
            n_boot=config.n_boot,
            progress=config.progress,
        )
    write_table(table, paths["pixels"])
    write_picture(reconstruction_grid(shown), paths["pixel_grid"])
    return StepResult(
        summary=f"pixel probe of {table.site.nunique()} sites",
        paths=paths,
        tables={"pixels": table},
        extras={"pictures": shown},
    )


COMMAND = Command(
    name="pixels",
    help="cache -> the pixel-value probe: reconstruction error by depth and a picture grid",
    description="Writes OUT/pixel_reconstruction.csv and OUT/pixel_reconstructions.png.",
    config=PixelConfig,
    step=pixel_step,
)
