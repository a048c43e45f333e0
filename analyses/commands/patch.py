"""``interp patch``: a clean / corrupted pair -> activation patching on the patch grid, per
depth."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from PIL import Image

from analyses.commands.command import Command, StepResult
from analyses.commands.inputs import load_step_model
from analyses.commands.options import _Formats, _Model, _Pair, check_named
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
from interp.options import option

PATCH_METHODS = ("exact", "attribution", "both")


@dataclass
class PatchConfig(_Pair, _Model, _Formats):
    """``interp patch``: activation patching of a clean / corrupted pair on the patch
    grid, into the folder ``out`` (``patching.csv``, the map, the pair's picture)."""

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


def patch_step(config: PatchConfig) -> StepResult:
    """Activation patching of ``config``'s pair (your own, or a built-in twin pair) at its
    sites, exact and/or by attribution, into the folder ``config.out``: the table (exact
    patching also restores every token of each site at once: the row whose ``token`` is
    minus the token count; ``interp.experiments.patching.PATCH_COLUMNS``), the map of each method
    and a picture of the pair."""

    from analyses.answer_figures import patching_map
    from interp.experiments.patching import attribution_margins, patch_margins

    folder = check_output_folder(config.out)
    methods = ["exact", "attribution"] if config.method == "both" else [config.method]
    names = {f"patching_{m}": _file_of(f"patching_{m}") for m in methods}
    formats = config.formats or ["html"]
    paths = {key: folder / name for key, name in PATCH_FILES.items()}
    paths.update({f"{k}.{f}": folder / f"{name}.{f}" for k, name in names.items() for f in formats})
    check_writable(paths.values(), config.overwrite)
    own = config.own_pair()  # read (and checked) before the model loads
    loaded = load_step_model(config)
    adapter = loaded.adapter
    pair = own or config.pairs(adapter)[0]
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
