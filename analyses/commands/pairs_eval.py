"""``interp pairs-eval``: per-question and pair accuracy (both images right) of a VLM on image
pairs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analyses.commands.command import Command, StepResult
from analyses.commands.options import _Model, _OwnData, check_named
from analyses.files import (
    PAIRS_EVAL_FILES,
)
from analyses.outputs import (
    check_output_folder,
    check_writable,
    write_table,
)
from analyses.paired import paired_accuracy
from interp.errors import ConfigError
from interp.options import option
from interp.sources import ImageSet


@dataclass
class PairsEvalConfig(_OwnData, _Model):
    """``interp pairs-eval``: questions about both images of each pair, answered by
    ``model``; per-question and pair accuracy (both right) per visual pattern, into the
    folder ``out``."""

    pairs: str | None = option(
        "a pairs.csv (columns i, j; optional pattern), e.g. from interp mine; default: the "
        "pairs the data defines (MMVP)",
        default=None,
    )
    data: str | ImageSet | None = option(
        "the images: MMVP's folder (Questions.csv and 'MMVP Images/'), your own images with "
        "question and answer columns, or (default) the stimuli the pairs were mined from",
        default=None,
    )
    n_images: int | None = option("with --data: only the first N images", default=None, minimum=2)
    conditions: list[str] | None = option(
        "conditions answered under (default: baseline)", default=None
    )
    batch_size: int = option("images per forward pass", default=32, minimum=1)
    n_boot: int = option(
        "bootstrap resamples of the pairs for the intervals", default=1000, minimum=1
    )
    seed: int = option("seed of the bootstrap", default=0, minimum=0)
    out: str = option("output folder", default="pairs-eval")
    overwrite: bool = option("replace existing outputs", default=False)
    progress: bool = option("show progress bars", default=True)
    attributes: list[str] | None = option(
        "with --data: the label columns kept (default: every one)", default=None
    )

    def check(self) -> None:
        super().check()
        check_named(self.out, "out", "an output folder")
        if self.pairs is None and self.data is None:
            raise ConfigError(
                "give pairs (a pairs.csv, e.g. from interp mine) or data that pairs its "
                "images (MMVP's folder)"
            )


def _pairs_and_data(config: PairsEvalConfig) -> tuple[pd.DataFrame, ImageSet]:
    """The pairs and the images they index: ``config.pairs`` (with its ``pairs.json``
    naming the stimuli it was mined from, where there is no ``data``) or the pairs the
    data defines."""
    from interp.stimuli import StimulusSpec, generate

    data = config.open_data()
    if config.pairs is None:
        pairs = data.pairs()
        if pairs is None:
            raise ConfigError(f"{config.data} defines no pairs; give pairs (a pairs.csv)")
        return pairs, data
    path = Path(config.pairs)
    if not path.is_file():
        raise ConfigError(f"no pairs table at {path}; give the pairs.csv interp mine wrote")
    try:
        pairs = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        pairs = pd.DataFrame()
    if not {"i", "j"} <= set(pairs.columns):
        raise ConfigError(f"{path} needs the columns i and j (image indices)")
    if pairs.empty:
        raise ConfigError(
            f"{path} holds no pairs (interp mine found none at its thresholds): nothing to "
            f"evaluate; mine with other thresholds"
        )
    if data is None:
        settings = path.with_name("pairs.json")
        origin = json.loads(settings.read_text())["data"] if settings.is_file() else {}
        if not settings.is_file():
            raise ConfigError(
                f"{path} has no pairs.json beside it saying which images it pairs; give the "
                f"images with data"
            )
        if origin.get("source") != "stimuli":
            raise ConfigError(
                f"{path} pairs your own images ({origin.get('path', 'see pairs.json')}), which "
                f"are not drawn again: give them with data"
            )
        spec = dict(origin["spec"])
        spec["background"] = tuple(spec.get("background", (255, 255, 255)))
        spec["image_sizes"] = tuple(spec.get("image_sizes", ()))
        data = generate(StimulusSpec(**spec))
    return _checked_pairs(pairs, data, path), data


def _checked_pairs(pairs: pd.DataFrame, data: ImageSet, path: Path) -> pd.DataFrame:
    """``pairs`` with indices into ``data``: found by image name where the table names
    its images (``image_i``, ``image_j``: rows of the data may be in another order);
    refused where an index is outside the data or a pair is one image twice."""
    if {"image_i", "image_j"} <= set(pairs.columns):
        where = {name: k for k, name in enumerate(data.names())}
        named = pd.concat([pairs["image_i"], pairs["image_j"]]).astype(str)
        missing = sorted(set(named) - set(where))
        if missing:
            raise ConfigError(
                f"{path} pairs images that are not in the data: {', '.join(missing[:5])}"
                f"{' ...' if len(missing) > 5 else ''}; give the images it was mined from"
            )
        pairs = pairs.assign(
            i=pairs["image_i"].astype(str).map(where), j=pairs["image_j"].astype(str).map(where)
        )
    for row, (i, j) in enumerate(zip(pairs["i"], pairs["j"], strict=True)):
        if not (0 <= i < len(data) and 0 <= j < len(data)):
            raise ConfigError(
                f"{path} row {row + 1} pairs images {i} and {j}; the data has images 0 to "
                f"{len(data) - 1}"
            )
        if i == j:
            raise ConfigError(f"{path} row {row + 1} pairs image {i} with itself")
    return pairs


def pairs_eval_step(config: PairsEvalConfig) -> StepResult:
    """Answer every question about the images of each pair (under each condition), and
    write the paired table (``paired.csv``: per condition and pattern, per-question and
    pair accuracy with chance levels and intervals) and the answers
    (``pair_answers.csv``)."""
    from analyses.commands.inputs import load_step_model
    from interp.experiments.answers import score_answers

    folder = check_output_folder(config.out)
    paths = {key: folder / name for key, name in PAIRS_EVAL_FILES.items()}
    check_writable(paths.values(), config.overwrite)
    pairs, data = _pairs_and_data(config)
    paired_images = set(pairs["i"]) | set(pairs["j"])
    questions = [q for q in data.questions() if q.image in paired_images]
    if not questions:
        raise ConfigError(
            "no questions about the paired images: the built-in stimuli have the organism's "
            "question types; own data needs question and answer columns"
        )
    loaded = load_step_model(config)
    answers = score_answers(
        loaded,
        data,
        conditions=config.conditions,
        questions=questions,
        batch_size=config.batch_size,
        progress=config.progress,
    )
    chance = {q.kind: 1 / len(q.options) for q in questions}
    table = paired_accuracy(answers, pairs, chance, n_boot=config.n_boot, seed=config.seed)
    write_table(table, paths["paired"])
    write_table(answers, paths["pair_answers"])
    shown = table.set_index(["condition", "pattern"])[
        ["n_pairs", "question_accuracy", "question_chance", "pair_accuracy", "pair_chance"]
    ]
    return StepResult(
        summary=f"question and pair accuracy on {len(pairs)} pairs:",
        paths=paths,
        tables={"paired": table, "answers": answers},
        shown=shown.to_string(float_format=lambda v: f"{v:.2f}"),
    )


COMMAND = Command(
    name="pairs-eval",
    help="per-question and pair accuracy (both images right) of a VLM on image pairs",
    description="Answers every question about both images of each pair (a pairs.csv of interp "
    "mine, or MMVP's folder); writes OUT/paired.csv (per condition and visual "
    "pattern: question and pair accuracy, chance, 95% intervals) and "
    "OUT/pair_answers.csv.",
    config=PairsEvalConfig,
    step=pairs_eval_step,
)
