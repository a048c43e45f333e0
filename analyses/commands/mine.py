"""``interp mine``: blind pairs: images one encoder embeds alike while another tells them apart
(MMVP)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
from PIL import Image

from analyses.blind_pairs import differing_attributes, matched_pairs, mine_pairs
from analyses.commands.command import Command, StepResult
from analyses.commands.options import _OwnData, check_named
from analyses.files import (
    EMBEDDINGS_FILE,
    MINE_FILES,
)
from analyses.outputs import (
    check_output_folder,
    check_writable,
    remove_outputs,
    write_atomic,
    write_picture,
    write_table,
)
from analyses.pictures import reconstruction_grid
from caches.embeddings import cached_embeddings
from interp.errors import ConfigError
from interp.options import option
from interp.organism import ORGANISM_NAME
from interp.sources import ImageSet

EMBEDDING_KINDS = ("image", "mean")


@dataclass
class MineConfig(_OwnData):
    """``interp mine``: blind pairs (MMVP): images that ``encoder_a`` embeds almost alike
    (cosine above ``threshold_a``) while ``encoder_b`` tells them apart (below
    ``threshold_b``), into the folder ``out``."""

    encoder_b: str | None = option(
        "the encoder that tells images apart (e.g. a DINOv2): built-in name, save_pretrained "
        "folder, or hub id (default: organism-ssl, the organism's world's self-supervised "
        "encoder)",
        default="organism-ssl",
    )
    encoder_a: str = option(
        "the encoder whose embedding is tested (e.g. a CLIP; a LLaVA-1.5's tower): built-in "
        "name, save_pretrained folder, or hub id",
        default=ORGANISM_NAME,
    )
    threshold_a: float = option(
        "pairs more alike than this under encoder_a (a cosine)", default=0.95, minimum=-1, maximum=1
    )
    threshold_b: float = option(
        "and less alike than this under encoder_b (a cosine)", default=0.6, minimum=-1, maximum=1
    )
    embedding: str = option(
        "image: each checkpoint's own image embedding (CLIP's projected or pooled output, "
        "SigLIP's pooled head, DINOv2's normed CLS); mean: the mean patch token",
        default="image",
        choices=EMBEDDING_KINDS,
    )
    data: str | ImageSet | None = option(
        "your own images (as for extract); default: the built-in synthetic stimuli",
        default=None,
    )
    attributes: list[str] | None = option(
        "labels compared within each pair (default: every label)", default=None
    )
    n_images: int | None = option(
        "number of images (default: 1000 synthetic ones; with --data, every row, or the first N)",
        default=None,
        minimum=2,
    )
    image_size: int | None = option(
        "stimulus side in px (default: encoder_a's native input size)", default=None, minimum=1
    )
    seed: int = option("seed of the stimuli", default=0, minimum=0)
    batch_size: int = option("images per forward pass", default=64, minimum=1)
    top: int = option("pairs shown in the picture of the top pairs", default=12, minimum=1)
    dtype: str | None = option(
        "float32, float16 or bfloat16 (default: the checkpoint's)", default=None
    )
    device_map: str | None = option("e.g. cuda (default: CPU)", default=None)
    local_files_only: bool = option("never reach the hub", default=False)
    out: str = option("output folder", default="mine")
    overwrite: bool = option("replace existing outputs", default=False)
    progress: bool = option("show progress bars", default=True)

    def check(self) -> None:
        super().check()
        check_named(self.out, "out", "an output folder")
        if self.encoder_b is None:
            raise ConfigError(
                "encoder_b is required: the encoder that tells images apart, e.g. "
                "facebook/dinov2-large or a save_pretrained folder of one"
            )
        if self.data is not None and self.image_size is not None:
            raise ConfigError("image_size draws the synthetic stimuli; with data leave it out")


def mine_step(config: MineConfig) -> StepResult:
    """Embed every image with both encoders (cached in ``embeddings.h5`` while the
    encoders, the embedding and the images stay the same), mine the blind pairs, and
    write ``pairs.csv`` (``i, j, image_i, image_j, cos_a, cos_b`` and, for labelled data,
    ``differs``: the categorical attributes whose values differ), for labelled data
    ``matched_pairs.csv`` (a random pair differing in the same attributes per blind pair:
    the control), ``pairs.json`` (what the pairs were mined from) and
    ``blind_pairs.png``."""
    from interp.experiments.embeddings import embed_images
    from interp.models.loading import load_model
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
    lines = []
    if not len(pairs):
        lines.append(
            "no pair is more alike than threshold_a under encoder A and less alike than "
            "threshold_b under encoder B; the tables are written empty"
        )
    if "differs" in pairs:
        counts = pairs["differs"].str.split(";").explode().value_counts()
        lines.append(
            "pairs whose images differ in: " + ", ".join(f"{k} {v}" for k, v in counts.items() if k)
        )
    return StepResult(
        summary=f"{len(pairs)} blind pairs among {len(embeddings['a'])} images",
        paths=paths,
        tables={"pairs": pairs},
        shown="\n".join(lines),
        extras={"embeddings": embeddings},
    )


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


COMMAND = Command(
    name="mine",
    help="blind pairs: images one encoder embeds alike while another tells them apart (MMVP)",
    description="Embeds every image with both encoders (kept in OUT/embeddings.h5 for a rerun), "
    "writes OUT/pairs.csv (i, j, image_i, image_j, cos_a, cos_b, and the attributes "
    "that differ) and OUT/blind_pairs.png (the top pairs).",
    config=MineConfig,
    step=mine_step,
)
