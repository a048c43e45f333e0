"""``interp mine``: blind pairs between two encoders, from images to ``pairs.csv`` and a
picture of the top pairs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from analyses.blind_pairs import differing_attributes, mine_pairs
from analyses.config import MineConfig
from analyses.outputs import check_output_folder, check_writable, write_picture, write_table
from analyses.pictures import reconstruction_grid
from caches.embeddings import cached_embeddings
from interp.sources import ImageSet

__all__ = ["MINE_FILES", "MineResult", "mine_step", "pair_picture"]

MINE_FILES = {"pairs": "pairs.csv", "pairs_picture": "blind_pairs.png"}
EMBEDDINGS_FILE = "embeddings.h5"  # reused by a later run on the same images and encoders


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
    ``differs``: the attributes whose values differ) and ``blind_pairs.png``."""
    from interp.embeddings import embed_images
    from interp.loading import load_model
    from interp.stimuli import StimulusSpec, generate

    folder = check_output_folder(config.out)
    paths = {key: folder / name for key, name in MINE_FILES.items()}
    check_writable(paths.values(), config.overwrite)
    data = config.open_data()
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
    labels = {
        name: values
        for name, values in data.labels.items()
        if config.attributes is None or name in config.attributes
    }
    if labels:
        pairs["differs"] = differing_attributes(pairs, labels)
    write_table(pairs, paths["pairs"])
    write_picture(pair_picture(data, pairs.head(config.top)), paths["pairs_picture"])
    return MineResult(pairs=pairs, embeddings=embeddings, paths=paths)


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
