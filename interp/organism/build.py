"""Train, evaluate and document the organism in one call (``interp organism train``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from interp.errors import ConfigError
from interp.models.loading import load_model
from interp.options import Settings, option
from interp.organism import ORGANISM_NAME
from interp.organism.card import write_card, write_finetune_card
from interp.organism.evaluation import EVAL_IMAGES, EVAL_SEED, evaluate
from interp.organism.finetune import FinetuneConfig, check_finetune, evaluate_pixels, finetune
from interp.organism.folders import staged_folder
from interp.organism.training import OrganismTrainConfig, config_dict, model_folder, train
from interp.stimuli import COMPLEXITY_LEVELS

__all__ = [
    "OrganismEvalConfig",
    "build_organism",
    "document_organism",
    "finetune_organism",
    "run_eval",
]


@dataclass
class OrganismEvalConfig(Settings):
    """``interp organism eval`` options."""

    model: str = option(
        "built-in name or save_pretrained folder (default: the organism)", default=ORGANISM_NAME
    )
    n_images: int = option("held-out images", default=EVAL_IMAGES, minimum=1)
    seed: int = option("seed of the held-out images", default=EVAL_SEED, minimum=0)
    max_objects: int = option(
        "most objects per image (1: lone objects, no binding)", default=4, minimum=1
    )
    complexity: int | None = option(
        "draw the images at this complexity level (1..5) instead (its own object counts)",
        default=None,
        choices=COMPLEXITY_LEVELS,
    )

    def check(self) -> None:
        if self.complexity is not None and self.max_objects != 4:
            raise ConfigError("give max_objects or complexity, not both")


def run_eval(config: OrganismEvalConfig) -> pd.DataFrame:
    return evaluate(
        load_model(config.model),
        n_images=config.n_images,
        seed=config.seed,
        max_objects=config.max_objects,
        complexity=config.complexity,
    )


def build_organism(config: OrganismTrainConfig) -> tuple[Path, pd.DataFrame]:
    """Train from scratch, evaluate on the held-out set, write the model card."""
    folder = model_folder(config.out, config.overwrite)
    with staged_folder(folder) as tmp:  # the model appears with its card, or not at all
        result = train(config, into=tmp)
        metrics = document_organism(
            tmp, recipe=config_dict(config), seconds=result.seconds, machine=result.machine
        )
    return folder, metrics


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


def finetune_organism(config: FinetuneConfig) -> tuple[Path, pd.DataFrame]:
    """Fine-tune, evaluate on held-out images (at the training complexity, and lone
    objects; the pixel task where trained) and write the card."""
    folder = check_finetune(config)
    with staged_folder(folder) as tmp:  # the model appears with its card, or not at all
        metrics = _tune_and_evaluate(config, tmp)
    return folder, metrics


def _tune_and_evaluate(config: FinetuneConfig, into: Path) -> pd.DataFrame:
    result = finetune(config, into=into)
    loaded = load_model(str(result.folder))
    tables = []
    for name, counts in (
        (f"complexity {config.complexity}", {"complexity": config.complexity}),
        ("lone objects", {"max_objects": 1}),
    ):
        table = evaluate(loaded, n_images=config.eval_images, **counts)
        if config.pixel_task:
            row = evaluate_pixels(
                loaded, n_images=config.eval_images, complexity=counts.get("complexity", 1)
            )
            table = pd.concat([table, pd.DataFrame([row])], ignore_index=True)
        tables.append(table.assign(images=name))
    metrics = pd.concat(tables, ignore_index=True)
    write_finetune_card(result.folder, config.recipe(), result.seconds, result.machine, metrics)
    return metrics
