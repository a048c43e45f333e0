"""The organism's self-supervised encoder beside its CLIP tower: linear probes of both
image embeddings (:func:`compare_encoders`), the encoder's model card, and
:func:`build_ssl` (``interp organism train-ssl``: train, compare, write the card)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from interp.organism.folders import check_model_folder, staged_folder
from interp.organism.ssl import IMAGE_SIZE, SslTrainConfig, train_ssl
from interp.stimuli import StimulusSpec, generate

__all__ = ["build_ssl", "compare_encoders", "write_ssl_card"]


def build_ssl(config: SslTrainConfig) -> tuple[Path, pd.DataFrame]:
    """Train the encoder, compare it with the organism's tower and write its card: the
    folder ``config.out`` appears with all of it, or not at all. Returns the folder and
    the comparison."""
    from interp.models.loading import load_model

    folder = check_model_folder(config.out, config.overwrite)
    with staged_folder(folder) as tmp:
        train_ssl(config, into=tmp)
        comparison = compare_encoders(load_model(str(tmp)), load_model("organism"))
        write_ssl_card(tmp, comparison)
    return folder, comparison


def compare_encoders(
    ssl: Any,
    organism: Any,
    *,
    n_images: int = 600,
    seed: int = 12345,
    n_boot: int = 200,
    attributes: list[str] | None = None,
) -> pd.DataFrame:
    """Held-out linear-probe accuracy of each categorical attribute from each encoder's
    image embedding (and from both side by side), on fresh one-to-four-object stimuli:
    5 folds grouped by image, the same folds for every probe (:func:`probes.mixture.
    mixture_scores`: alpha 1 is the organism's tower alone, 0 the SSL encoder alone)."""
    from interp.experiments.embeddings import embed_images
    from probes.mixture import mixture_scores

    data = generate(StimulusSpec(n_images=n_images, image_size=IMAGE_SIZE, seed=seed))
    a = embed_images(organism, data, progress=False)
    b = embed_images(ssl, data, progress=False)
    rows = []
    for attribute in attributes or list(data.label_classes):
        for row in mixture_scores(
            a, b, data.labels[attribute], np.arange(n_images), alphas=(1.0, 0.0), n_boot=n_boot
        ):
            encoder = {1.0: "organism (CLIP tower)", 0.0: "SSL encoder"}.get(row["alpha"], "both")
            rows.append({"attribute": attribute, "encoder": encoder, **row})
    return pd.DataFrame(rows)


def write_ssl_card(folder: Path, comparison: pd.DataFrame) -> Path:
    """``README.md`` of the encoder: recipe, time, machine, and the probe comparison."""
    recipe = pd.read_json(folder / "recipe.json", typ="series")
    # The recipe's names before the options were renamed: batch, layers.
    batch_size = int(recipe.get("batch_size", recipe.get("batch")))
    layers = int(recipe.get("vision_layers", recipe.get("layers")))
    log = pd.read_csv(folder / "training_log.csv")
    last = log.tail(50).mean()
    table = comparison.pivot_table(index="attribute", columns="encoder", values="accuracy")
    chance = comparison.groupby("attribute")["chance"].first()
    table["chance"] = chance
    lines = [
        "# vlm-interp organism-ssl: a self-supervised encoder of the organism's world",
        "",
        "The reference encoder for blind-pair mining against the organism's CLIP tower "
        "(`interp mine`, MMVP's DINOv2 role). A `Dinov2Model` (CLS + 8x8 patches of 8 px, "
        f"{layers} layers x {int(recipe['hidden_size'])}) trained from "
        "scratch with SimCLR on fresh stimuli (two views per image: a random 60-100% crop "
        "resized back, brightness x0.9-1.1, pixel noise; no flips, no colour changes; the "
        "normed CLS through a discarded projection head; NT-Xent).",
        "",
        f"Recipe: {int(recipe['steps'])} steps of {batch_size} images, peak lr "
        f"{recipe['lr']}, temperature {recipe['temperature']}, seed {int(recipe['seed'])}. "
        f"Took {float(recipe['seconds']) / 60:.1f} min on {recipe['machine']}.",
        f"Last 50 steps: loss {last.loss:.3f}, twin retrieval in the batch "
        f"{last.twin_retrieval:.2f}.",
        "Reproduce: `interp organism train-ssl --out DIR --seed 0`.",
        "",
        "## Linear probes of the image embedding (held-out accuracy)",
        "",
        "600 fresh stimuli (seed 12345), 5 folds grouped by image, the same folds for each "
        "encoder (`analyses.encoders.compare_encoders`); `both`: the two embeddings side "
        "by side.",
        "",
        _markdown(table),
        "",
    ]
    path = folder / "README.md"
    path.write_text("\n".join(lines))
    return path


def _markdown(table: pd.DataFrame) -> str:
    """A small numeric table (index: attribute) as Markdown, two decimals."""
    header = ["attribute", *map(str, table.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in table.iterrows():
        lines.append("| " + " | ".join([str(name), *(f"{v:.2f}" for v in row)]) + " |")
    return "\n".join(lines)
