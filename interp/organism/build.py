"""Train, evaluate and document the organism in one call (``interp organism train``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from interp.errors import ConfigError
from interp.loading import load_model
from interp.options import option
from interp.organism import ORGANISM_NAME
from interp.organism.card import write_card
from interp.organism.evaluation import EVAL_IMAGES, EVAL_SEED, evaluate
from interp.organism.training import OrganismTrainConfig, config_dict, train

__all__ = ["OrganismEvalConfig", "build_organism", "document_organism", "run_eval"]


@dataclass
class OrganismEvalConfig:
    """``interp organism eval`` options."""

    model: str = option(
        "built-in name or save_pretrained folder (default: the organism)", default=ORGANISM_NAME
    )
    n_images: int = option("held-out images", default=EVAL_IMAGES)
    seed: int = option("seed of the held-out images", default=EVAL_SEED)
    max_objects: int = option("most objects per image (1: lone objects, no binding)", default=4)

    def __post_init__(self) -> None:
        if self.n_images < 1:
            raise ConfigError(f"n_images must be >= 1, got {self.n_images}")


def run_eval(config: OrganismEvalConfig) -> pd.DataFrame:
    return evaluate(
        load_model(config.model),
        n_images=config.n_images,
        seed=config.seed,
        max_objects=config.max_objects,
    )


def build_organism(config: OrganismTrainConfig) -> tuple[Path, pd.DataFrame]:
    """Train from scratch, evaluate on the held-out set, write the model card."""
    result = train(config)
    metrics = document_organism(
        result.folder, recipe=config_dict(config), seconds=result.seconds, machine=result.machine
    )
    return result.folder, metrics


def document_organism(
    folder: Path,
    *,
    recipe: dict,
    seconds: dict[str, float],
    machine: dict,
    notes: str = "",
) -> pd.DataFrame:
    """Evaluate a trained organism (all images, then lone objects) and write its card."""
    loaded = load_model(str(folder))
    metrics = evaluate(loaded)
    single = evaluate(loaded, max_objects=1)
    write_card(
        folder,
        recipe=recipe,
        seconds=seconds,
        machine=machine,
        metrics=metrics,
        single_object_metrics=single,
        n_parameters=sum(p.numel() for p in loaded.model.parameters()),
        feature_layer=int(loaded.model.config.vision_feature_layer),
        notes=notes,
    )
    return metrics
