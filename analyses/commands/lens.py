"""``interp lens``: the logit lens: does each LM depth's image token already name its object's
class?"""

from __future__ import annotations

from dataclasses import dataclass

from analyses.commands.command import Command, StepResult
from analyses.commands.inputs import load_step_model, step_images
from analyses.commands.options import _Images, _Sites, check_named
from analyses.files import (
    LENS_FILES,
)
from analyses.outputs import (
    check_output_folder,
    check_writable,
    write_figures,
    write_table,
)
from interp.options import option


@dataclass
class LensConfig(_Images, _Sites):
    """``interp lens``: the logit lens on the image tokens over each image's first
    object, per LM depth and categorical attribute, into the folder ``out``."""

    out: str = option("output folder", default="lens")

    def check(self) -> None:
        super().check()
        check_named(self.out, "out", "an output folder")


def lens_step(config: LensConfig) -> StepResult:
    """The logit-lens table of ``config``'s images (``lens.csv``) and its figure, in the
    folder ``config.out``. Attributes: those named, else every categorical label whose
    class words are distinct tokens."""
    from analyses.lens_figures import lens_rank_curve
    from interp.experiments.lens import lens_table

    folder = check_output_folder(config.out)
    paths = {key: folder / name for key, name in LENS_FILES.items()}
    check_writable(paths.values(), config.overwrite)
    data = config.open_data()
    loaded = load_step_model(config)
    data, _ = step_images(config, loaded, data)
    table = lens_table(
        loaded,
        data,
        attributes=config.attributes,
        sites=config.sites,
        prompt=loaded.adapter.default_prompt(config.question),
        batch_size=config.batch_size,
    )
    write_table(table, paths["lens"])
    write_figures(lens_rank_curve(table), paths, "lens")
    shown = table[table.tokens == "on_object"].pivot_table(
        index="site", columns="attribute", values="median_rank", sort=False
    )
    return StepResult(
        summary=f"median rank of the class word at the tokens over the object (1 = top), "
        f"{len(data)} images:",
        paths=paths,
        tables={"lens": table},
        shown=shown.to_string(float_format=lambda v: f"{v:g}"),
    )


COMMAND = Command(
    name="lens",
    help="the logit lens: does each LM depth's image token already name its object's class?",
    description="Writes OUT/lens.csv (per LM site and attribute: the class word's rank at the "
    "tokens over the object and over the background) and OUT/lens_ranks.html.",
    config=LensConfig,
    step=lens_step,
)
