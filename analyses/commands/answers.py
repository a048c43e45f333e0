"""``interp answers``: data or a cache's images -> the model's answers under every condition."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analyses.commands.command import Command, StepResult
from analyses.commands.inputs import cache_images, load_step_model, step_images
from analyses.commands.options import (
    _Conditions,
    _ConditionSweeps,
    _Images,
    check_named,
)
from analyses.files import (
    ANSWER_FILES,
)
from analyses.outputs import (
    check_output_folder,
    check_writable,
    write_atomic,
    write_table,
)
from analyses.provenance import settings_path
from caches import CacheReader
from interp.errors import ConfigError
from interp.options import option


@dataclass
class AnswersConfig(_Images, _Conditions, _ConditionSweeps):
    """``interp answers``: the model's answers to the questions of the data (the built-in
    stimuli's question types, or a label table's question / answer columns), under every
    condition, into the folder ``out`` (``answers.csv``: per condition and question type;
    ``answer_rows.csv``: per question)."""

    source: str | None = option(
        "a cache (its model and images are used again) or your own data (as --data); "
        "default: --data, or the built-in stimuli",
        default=None,
        positional=True,
    )
    model: str | None = option(
        "built-in name, local save_pretrained folder, or hub id (default: the cache's "
        "model, else the built-in one)",
        default=None,
    )
    n_images: int | None = option(
        "number of images (default: 256 synthetic ones; with --data, every row, or the first "
        "N); at least 2: an accuracy over one image has no interval",
        default=None,
        minimum=2,
    )
    n_boot: int = option("bootstrap resamples of images for 95% intervals", default=1000, minimum=1)
    seed: int | None = option(
        "seed of stimuli, shuffling and the bootstrap (default: a cache's own, else 0)",
        default=None,
        minimum=0,
    )
    out: str = option("output folder", default="answers")

    def check(self) -> None:
        super().check()
        check_named(self.out, "out", "an output folder")
        if self.source is not None and self.data is not None:
            raise ConfigError(
                f"give the images once: source ({self.source!r}) or data ({self.data!r})"
            )


def _cache_source(config: AnswersConfig) -> tuple[AnswersConfig, str | None]:
    """Settings whose model, images and seed are a cache's (``source`` names a cache;
    settings that contradict it are refused), or whose data is ``source`` (your own
    data); and the cache's weights identity (None for data)."""
    import h5py

    source = Path(str(config.source))
    if not source.exists():
        raise ConfigError(
            f"source {str(source)!r} does not exist; pass a cache (interp extract writes "
            f"one) or a folder of your own images with a label table"
        )
    if not (source.is_file() and h5py.is_hdf5(source)):
        return dataclasses.replace(config, source=None, data=str(source)), None
    with CacheReader(source) as reader:
        attrs = reader.attrs
        n_cached = reader.n_written
        seeds = [reader.intervention(c).get("seed") for c in reader.conditions]
        seeds += [d.get("seed") for c in reader.conditions for d in
                  reader.intervention(c).get("by_image_size", {}).values()]  # fmt: skip
    if config.n_images is not None and config.n_images != n_cached:
        raise ConfigError(
            f"n_images={config.n_images} contradicts the cache {str(source)!r}, which holds "
            f"{n_cached} images: leave n_images out to answer about its images, or pass "
            f"the images themselves as data"
        )
    cached_seed = next((int(s) for s in seeds if s is not None), None)
    if cached_seed is None:
        cached_seed = int((attrs.get("stimuli") or {}).get("seed", 0))
    if config.seed is not None and config.seed != cached_seed:
        raise ConfigError(
            f"seed={config.seed} contradicts the cache {str(source)!r}, made with seed "
            f"{cached_seed} (its shuffle and its images): leave seed out to use the cache's"
        )
    data = cache_images(attrs, source)
    changed = dataclasses.replace(
        config, source=None, data=data, model=config.model or str(attrs["model"]), seed=cached_seed
    )
    return changed, str(attrs.get("weights_id", "unknown"))


def answers_step(config: AnswersConfig, *, loaded: Any | None = None) -> StepResult:
    """The model's answers to the data's questions under every condition (the named
    ones, or the model's defaults; with the windows and drops of the settings), written
    into the folder ``config.out``: ``answers.csv`` (per condition and question type:
    accuracy with its interval, chance, log-probability, margin) and ``answer_rows.csv``
    (per question); the tables ``answers`` (the summary, :mod:`analyses.answers`) and
    ``answer_rows`` (one row per question and condition,
    ``interp.experiments.answers.ANSWER_COLUMNS``)."""
    from analyses.answers import summarise_answers
    from interp.experiments.answers import score_answers

    cached_weights = None
    if config.source is not None:
        config, cached_weights = _cache_source(config)
    if config.seed is None:
        config = dataclasses.replace(config, seed=0)
    folder = check_output_folder(config.out)
    paths = {key: folder / name for key, name in ANSWER_FILES.items()}
    check_writable(paths.values(), config.overwrite)
    data = config.open_data()
    loaded = loaded if loaded is not None else load_step_model(config)
    weights = loaded.identity.get("weights", "unknown")
    if cached_weights not in (None, "unknown") and weights != cached_weights:
        raise ConfigError(
            f"model={config.model!r} is not the model the cache was made with (other "
            f"weights); leave model out to answer with the cache's model, or pass the "
            f"images themselves as data"
        )
    adapter = loaded.adapter
    conditions = config.expanded_conditions(config.conditions, adapter)
    data, _ = step_images(config, loaded, data)
    questions = data.questions()
    rows = score_answers(
        loaded,
        data,
        conditions=conditions if conditions is not None else adapter.conditions,
        questions=questions,
        batch_size=config.batch_size,
        seed=config.seed,
        progress=config.progress,
    )
    attributes = {q.kind: q.attribute for q in questions}
    summary = summarise_answers(rows, n_boot=config.n_boot, seed=config.seed, attributes=attributes)
    made = {
        "origin": {
            "model": loaded.source,
            "weights_id": loaded.identity.get("weights", "unknown"),
            "data": data.describe(),
            "n_images": len(data),
        },
        "conditions": list(dict.fromkeys(rows["condition"])),
        "seed": config.seed,
        "n_boot": config.n_boot,
    }
    for key in ("answer_rows", "answers"):
        write_atomic(settings_path(paths[key]), lambda tmp: tmp.write_text(json.dumps(made)))
        write_table(rows if key == "answer_rows" else summary, paths[key])
    shown = summary.pivot_table(
        index="condition", columns="question_type", values="accuracy", sort=False
    )
    return StepResult(
        summary=f"accuracy of {len(rows)} answers of {len(data)} images, per condition "
        f"and question type:",
        paths=paths,
        tables={"answers": summary, "answer_rows": rows},
        shown=shown.to_string(float_format=lambda v: f"{v:.2f}"),
    )


COMMAND = Command(
    name="answers",
    help="data or a cache's images -> the model's answers under every condition",
    description="Writes OUT/answers.csv (accuracy per condition and question type, with "
    "intervals, chance, log-probability and margin) and OUT/answer_rows.csv (per "
    "question).",
    config=AnswersConfig,
    step=answers_step,
)
