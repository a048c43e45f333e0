"""``interp mine``: blind pairs between two encoders, from images to ``pairs.csv`` and a
picture of the top pairs; ``interp pairs-eval``: a VLM's per-question and pair accuracy
on such pairs (or MMVP's)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from analyses.blind_pairs import differing_attributes, matched_pairs, mine_pairs
from analyses.config import MineConfig, MofConfig, PairsEvalConfig
from analyses.files import EMBEDDINGS_FILE, MINE_FILES, MOF_FILES, PAIRS_EVAL_FILES
from analyses.outputs import (
    check_output_folder,
    check_writable,
    remove_outputs,
    write_atomic,
    write_picture,
    write_table,
)
from analyses.paired import paired_accuracy
from analyses.pictures import reconstruction_grid
from caches.embeddings import cached_embeddings
from interp.errors import ConfigError
from interp.sources import ImageSet

__all__ = [
    "MINE_FILES",
    "PAIRS_EVAL_FILES",
    "MineResult",
    "PairsEvalResult",
    "mine_step",
    "pair_picture",
    "pairs_eval_step",
    "mof_step",
]


@dataclass
class MineResult:
    """The pairs found (``pairs.csv``'s rows), each encoder's embeddings ``(n, d)``, and
    the files written."""

    pairs: pd.DataFrame
    embeddings: dict[str, np.ndarray]
    paths: dict[str, Path]


def mine_step(config: MineConfig) -> MineResult:
    """Embed every image with both encoders (cached in ``embeddings.h5`` while the
    encoders, the embedding and the images stay the same), mine the blind pairs, and
    write ``pairs.csv`` (``i, j, image_i, image_j, cos_a, cos_b`` and, for labelled data,
    ``differs``: the categorical attributes whose values differ), for labelled data
    ``matched_pairs.csv`` (a random pair differing in the same attributes per blind pair:
    the control), ``pairs.json`` (what the pairs were mined from) and
    ``blind_pairs.png``."""
    from interp.embeddings import embed_images
    from interp.loading import load_model
    from interp.stimuli import StimulusSpec, generate

    folder = check_output_folder(config.out)
    paths = {key: folder / name for key, name in MINE_FILES.items()}
    check_writable(paths.values(), config.overwrite)
    data = config.open_data()
    if data is not None:
        _check_attributes(config.attributes, data)
    loaded = {
        name: load_model(
            source,
            dtype=config.dtype,
            device_map=config.device_map,
            local_files_only=config.local_files_only,
        )
        for name, source in (("a", config.encoder_a), ("b", config.encoder_b))
    }
    if data is None:
        side = config.image_size or loaded["a"].adapter.native_image_size
        data = generate(
            StimulusSpec(n_images=config.n_images or 1000, image_size=side, seed=config.seed)
        )
    _check_attributes(config.attributes, data)
    if config.overwrite:  # an earlier run's tables never stay beside this one's
        remove_outputs(paths.values(), "the outputs of an earlier run (overwrite)")
    origin = data.describe()
    embeddings = {}
    for name, model in loaded.items():
        attrs = {
            "model": model.source,
            "weights_id": model.identity.get("weights", "unknown"),
            "dtype": model.dtype_name,
            "embedding": config.embedding,
            "data": origin,
        }
        embeddings[name] = cached_embeddings(
            folder / EMBEDDINGS_FILE,
            name,
            attrs,
            lambda model=model: embed_images(
                model,
                data,
                config.embedding,
                batch_size=config.batch_size,
                progress=config.progress,
            ),
        )
    pairs = mine_pairs(embeddings["a"], embeddings["b"], config.threshold_a, config.threshold_b)
    names = np.asarray(data.names(), dtype=object)
    pairs.insert(2, "image_i", names[pairs["i"].to_numpy()])
    pairs.insert(3, "image_j", names[pairs["j"].to_numpy()])
    labels = {  # categorical ones: a continuous label (a position) differs in every pair
        name: values
        for name, values in data.labels.items()
        if name in data.label_classes and (config.attributes is None or name in config.attributes)
    }
    if labels:
        pairs["differs"] = differing_attributes(pairs, labels)
        write_table(matched_pairs(pairs, labels, seed=config.seed), paths["matched_pairs"])
    else:
        paths.pop("matched_pairs")
    write_table(pairs, paths["pairs"])
    settings = {
        "data": origin,
        "encoder_a": loaded["a"].source,
        "encoder_b": loaded["b"].source,
        "embedding": config.embedding,
        "threshold_a": config.threshold_a,
        "threshold_b": config.threshold_b,
    }
    write_atomic(paths["pairs_settings"], lambda p: p.write_text(json.dumps(settings, indent=1)))
    write_picture(pair_picture(data, pairs.head(config.top)), paths["pairs_picture"])
    return MineResult(pairs=pairs, embeddings=embeddings, paths=paths)


def _check_attributes(attributes: list[str] | None, data: ImageSet) -> None:
    """The attributes compared within pairs must be categorical labels of the data."""
    unknown = [a for a in attributes or () if a not in data.label_classes]
    if unknown:
        raise ConfigError(
            f"attributes {unknown} are not categorical labels of the images; their "
            f"categorical labels: {', '.join(data.label_classes) or 'none'}"
        )


def pair_picture(data: ImageSet, pairs: pd.DataFrame, side: int = 64) -> Image.Image:
    """One row per pair (in the table's order): image ``i`` beside image ``j``, each
    resized to ``side`` px."""
    if not len(pairs):
        return Image.new("RGB", (2 * side, 16), (255, 255, 255))

    def column(indices: np.ndarray) -> np.ndarray:
        crops = data.crops(indices)  # each (H_i, W_i, 3)
        return np.stack(
            [
                np.asarray(Image.fromarray(c).resize((side, side), Image.Resampling.BILINEAR))
                for c in crops
            ]
        )  # (k, side, side, 3)

    return reconstruction_grid(
        {"image i": column(pairs["i"].to_numpy()), "image j": column(pairs["j"].to_numpy())},
        scale=1,
    )


@dataclass
class PairsEvalResult:
    """Per condition and pattern the paired table (``paired.csv``), the answers it was
    made of, and the files written."""

    table: pd.DataFrame
    answers: pd.DataFrame
    paths: dict[str, Path]


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


def pairs_eval_step(config: PairsEvalConfig) -> PairsEvalResult:
    """Answer every question about the images of each pair (under each condition), and
    write the paired table (``paired.csv``: per condition and pattern, per-question and
    pair accuracy with chance levels and intervals) and the answers
    (``pair_answers.csv``)."""
    from analyses.steps import load_step_model
    from interp.answers import score_answers

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
    return PairsEvalResult(table=table, answers=answers, paths=paths)


def mof_step(config: MofConfig) -> tuple[pd.DataFrame, dict[str, Path]]:
    """Mixture-of-Features probes of the two caches (``mof.csv``) and their figure
    (``mixture_of_features.<format>``), in the folder ``config.out``."""
    from analyses.mixture_figures import mixture_curve
    from analyses.outputs import write_figures
    from caches import CacheReader
    from probes.mixture import mixture_sweep

    folder = check_output_folder(config.out)
    paths = {key: folder / name for key, name in MOF_FILES.items()}
    paths.update({f"mof.{f}": folder / f"mixture_of_features.{f}" for f in config.formats})
    check_writable(paths.values(), config.overwrite)
    path_a, path_b = config.caches
    with CacheReader(path_a) as cache_a, CacheReader(path_b) as cache_b:
        site_a = config.site_a or cache_a.sites[-1]
        site_b = config.site_b or cache_b.sites[-1]
        table = mixture_sweep(
            cache_a,
            cache_b,
            site_a,
            site_b,
            attributes=config.attributes,
            selections=config.selections,
            alphas=config.alphas,
            n_splits=config.n_splits,
            n_boot=config.n_boot,
            seed=config.seed,
        )
    write_table(table, paths["mof"])
    write_figures(mixture_curve(table), paths, "mof")
    return table, paths
