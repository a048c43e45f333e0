"""``interp attention``: attention from the answer position to each patch token, per LM layer and
head."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analyses.commands.command import Command, StepResult
from analyses.commands.inputs import load_step_model, step_images
from analyses.commands.options import (
    _Conditions,
    _ConditionSweeps,
    _Images,
    check_named,
)
from analyses.files import (
    ATTENTION_FILES,
)
from analyses.outputs import (
    check_output_folder,
    check_writable,
    write_figure,
    write_table,
)
from interp.conditions import (
    CONDITION_SYNTAX,
)
from interp.options import option


@dataclass
class AttentionConfig(_Images, _Conditions, _ConditionSweeps):
    """``interp attention``: attention from the answer position (or ``query``) to each
    patch token, per LM layer and head, under each condition, into the folder ``out``
    (the model is loaded with eager attention: only it forms the weights)."""

    conditions: list[str] | None = option(
        f"conditions: {'; '.join(CONDITION_SYNTAX.values())} (default: baseline)", default=None
    )
    layers: list[int] | None = option("LM layers (default: all)", default=None, minimum=0)
    query: int | None = option(
        "the text position attending: an index into the prompt's tokens, negative from its "
        "end (default: its last token, where the answer is read)",
        default=None,
    )
    out: str = option("output folder", default="attention")

    def check(self) -> None:
        super().check()
        check_named(self.out, "out", "an output folder")
        if self.n_images is None and self.data is None:
            self.n_images = 16  # a table per token, layer and head: a few images suffice


def attention_step(config: AttentionConfig) -> StepResult:
    """Attention to the image of ``config``'s images under each condition
    (``attention.csv``), its map of the first image and its total by layer, in the folder
    ``config.out``."""
    from analyses.lens_figures import attention_map, attention_mass
    from interp.experiments.attention import attention_table, attention_to_image
    from interp.experiments.interventions import check_conditions, make_intervention

    folder = check_output_folder(config.out)
    paths = {key: folder / name for key, name in ATTENTION_FILES.items()}
    check_writable(paths.values(), config.overwrite)
    data = config.open_data()
    loaded = load_step_model(config, attn_implementation="eager")
    data, sizes = step_images(config, loaded, data)
    prompt = loaded.adapter.default_prompt(config.question)
    conditions = config.expanded_conditions(config.conditions, loaded.adapter) or ["baseline"]
    conditions = check_conditions(conditions, loaded.adapter, sizes)
    tables = []
    for condition in conditions:
        intervention = make_intervention(condition, seed=config.seed)
        for size in sizes:
            members = np.flatnonzero((data.sizes == np.asarray(size)).all(1))
            for start in range(0, len(members), config.batch_size):
                index = members[start : start + config.batch_size]
                weights = attention_to_image(
                    loaded,
                    data.crops(index),
                    prompt=prompt,
                    layers=config.layers,
                    query=config.query,
                    intervention=intervention,
                )
                part = attention_table(
                    loaded, weights, size, layers=config.layers, condition=condition
                )
                part["image"] = index[part["image"].to_numpy()]
                tables.append(part)
    table = pd.concat(tables, ignore_index=True)
    write_table(table, paths["attention"])
    first = int(table["image"].min())
    picture = data.crops([first])[0]  # drawn under its attention
    write_figure(attention_map(table, image=first, picture=picture), paths["attention_map"])
    write_figure(attention_mass(table), paths["attention_mass"])
    return StepResult(
        summary=f"attention of {len(data)} images under {len(conditions)} conditions",
        paths=paths,
        tables={"attention": table},
    )


COMMAND = Command(
    name="attention",
    help="attention from the answer position to each patch token, per LM layer and head",
    description="Writes OUT/attention.csv, OUT/attention_map.html (the first image, per layer) "
    "and OUT/attention_by_layer.html; loads the model with eager attention.",
    config=AttentionConfig,
    step=attention_step,
)
