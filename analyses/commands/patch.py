"""``interp patch``: a clean / corrupted pair -> activation patching on the patch grid, per
depth."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from analyses.commands.command import Command, StepResult
from analyses.commands.inputs import load_step_model
from analyses.commands.options import _Formats, _Model, check_named
from analyses.commands.tables import _file_of
from analyses.files import (
    PATCH_FILES,
)
from analyses.outputs import (
    check_output_folder,
    check_writable,
    write_figure,
    write_picture,
    write_table,
)
from interp.errors import ConfigError
from interp.options import option

PATCH_METHODS = ("exact", "attribution", "both")


@dataclass
class PatchConfig(_Model, _Formats):
    """``interp patch``: activation patching of a clean / corrupted pair on the patch
    grid, into the folder ``out`` (``patching.csv``, the map, the pair's picture)."""

    clean: str | None = option(
        "the clean image (a file); with --corrupt, --question, --answer and --wrong "
        "(default: a built-in twin pair, --twin)",
        default=None,
    )
    corrupt: str | None = option("the corrupted image (a file of the same size)", default=None)
    question: str | None = option("the question put to both images", default=None)
    answer: str | None = option("the clean image's answer", default=None)
    wrong: str | None = option("the corrupted image's answer", default=None)
    twin: str = option(
        "the built-in pair: a stimulus and its twin whose one object changes color or "
        "shape, or which is mirrored (color, shape or mirror)",
        default="color",
        choices=("color", "shape", "mirror"),
    )
    seed: int = option("seed of the built-in pair", default=0, minimum=0)
    sites: list[str] | None = option(
        "sites to patch (default: the projector and every LM layer)", default=None
    )
    method: str = option(
        "exact (a forward pass per token), attribution (one backward pass, first order) or both",
        default="both",
        choices=PATCH_METHODS,
    )
    batch_size: int = option("patched copies per forward pass", default=64, minimum=1)
    out: str = option("output folder", default="patching")
    overwrite: bool = option("replace existing outputs", default=False)
    progress: bool = option("show progress bars (loading the model)", default=True)

    def check(self) -> None:
        super().check()
        check_named(self.out, "out", "an output folder")
        own = {k: getattr(self, k) for k in ("clean", "corrupt", "question", "answer", "wrong")}
        if any(v is not None for v in own.values()) and not all(own.values()):
            missing = [k for k, v in own.items() if not v]
            raise ConfigError(
                f"a pair of your own needs clean, corrupt, question, answer and wrong; "
                f"missing {missing}"
            )


def _read_image(path: str, what: str) -> Any:
    """An image file as ``(H, W, 3)`` uint8; a ConfigError naming ``what`` otherwise."""
    from PIL import UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError as err:
        raise ConfigError(f"{what}: no image at {path!r}; pass an image file") from err
    except (OSError, UnidentifiedImageError) as err:
        raise ConfigError(f"{what}: {path!r} cannot be read as an image ({err})") from err


def patch_step(config: PatchConfig) -> StepResult:
    """Activation patching of ``config``'s pair (your own, or a built-in twin pair) at its
    sites, exact and/or by attribution, into the folder ``config.out``: the table (exact
    patching also restores every token of each site at once: the row whose ``token`` is
    minus the token count; ``interp.experiments.patching.PATCH_COLUMNS``), the map of each method
    and a picture of the pair."""

    from analyses.answer_figures import patching_map
    from interp.experiments.patching import PatchPair, attribution_margins, patch_margins

    folder = check_output_folder(config.out)
    methods = ["exact", "attribution"] if config.method == "both" else [config.method]
    names = {f"patching_{m}": _file_of(f"patching_{m}") for m in methods}
    formats = config.formats or ["html"]
    paths = {key: folder / name for key, name in PATCH_FILES.items()}
    paths.update({f"{k}.{f}": folder / f"{name}.{f}" for k, name in names.items() for f in formats})
    check_writable(paths.values(), config.overwrite)
    if config.clean is not None:
        pair = PatchPair(
            clean=_read_image(config.clean, "clean"),
            corrupt=_read_image(config.corrupt, "corrupt"),
            question=str(config.question),
            answer=str(config.answer),
            wrong=str(config.wrong),
            name=f"{Path(config.clean).name} vs {Path(config.corrupt).name}",
        )
    loaded = load_step_model(config)
    adapter = loaded.adapter
    if config.clean is None:
        from interp.organism.twins import twin_pair

        side = adapter.native_image_size
        pair = twin_pair(config.twin, side, seed=config.seed)
    sites = config.sites or ["projector", *(f"lm.{i}" for i in range(adapter.n_lm_layers))]
    tables = []
    if "exact" in methods:
        tables.append(patch_margins(loaded, pair, sites, batch_size=config.batch_size, every=True))
    if "attribution" in methods:
        tables.append(attribution_margins(loaded, pair, sites))
    table = pd.concat(tables, ignore_index=True)
    figures = {f"patching_{m}": patching_map(table, method=m, picture=pair.clean) for m in methods}
    write_table(table, paths["patching"])
    gap = np.full((pair.clean.shape[0], 4, 3), 255, dtype=np.uint8)
    write_picture(
        Image.fromarray(np.concatenate([pair.clean, gap, pair.corrupt], 1)), paths["patch_pair"]
    )
    for key, path in paths.items():
        if key.startswith("patching_"):
            write_figure(figures[key.split(".")[0]], path)
    single = table[table.token >= 0].groupby(["method", "site"], sort=False)["restored"]
    shown = single.agg(best_token="max", sum_of_tokens="sum")
    every = table[table.token < 0].set_index(["method", "site"])["restored"]
    shown["every_token"] = every.reindex(shown.index)
    return StepResult(
        summary=f"{pair.name}: share of the clean answer's margin restored:",
        paths=paths,
        tables={"patching": table},
        shown=shown.round(3).to_string(na_rep="-"),
        extras={"figures": figures},
    )


COMMAND = Command(
    name="patch",
    help="a clean / corrupted pair -> activation patching on the patch grid, per depth",
    description="Writes OUT/patching.csv (per site and token: the share of the clean answer's "
    "margin that restoring it brings back), OUT/patching_map_<method>.html and "
    "OUT/patching_pair.png.",
    config=PatchConfig,
    step=patch_step,
)
