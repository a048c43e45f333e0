"""``interp organism train | eval | train-ssl | finetune``: the built-in model organism,
trained, evaluated, its self-supervised encoder, and fine-tuned (the settings are the
organism's own, in :mod:`interp.organism`)."""

from __future__ import annotations

from analyses.commands.command import Command, StepResult
from interp.organism.build import OrganismEvalConfig
from interp.organism.finetune import FinetuneConfig
from interp.organism.ssl import SslTrainConfig
from interp.organism.training import OrganismTrainConfig

__all__ = ["COMMANDS"]


def _three(value: float) -> str:
    return f"{value:.3f}"


def train_step(config: OrganismTrainConfig) -> StepResult:
    """Train the organism from scratch, evaluate it, write its model card."""
    from interp.organism.build import build_organism

    folder, metrics = build_organism(config)
    return StepResult(
        summary="held-out accuracy per question type:",
        paths={"model and card": folder},
        tables={"metrics": metrics},
        shown=metrics.to_string(index=False, float_format=_three),
    )


def eval_step(config: OrganismEvalConfig) -> StepResult:
    """Held-out accuracy per question type, beside chance."""
    from interp.organism.build import run_eval

    metrics = run_eval(config)
    return StepResult(
        summary=f"held-out accuracy of {config.model} per question type:",
        tables={"metrics": metrics},
        shown=metrics.to_string(index=False, float_format=_three),
    )


def train_ssl_step(config: SslTrainConfig) -> StepResult:
    """Train the world's self-supervised encoder; probes of it beside the organism's tower."""
    from analyses.encoders import build_ssl

    folder, comparison = build_ssl(config)
    shown = comparison.pivot_table(index="attribute", columns="encoder", values="accuracy")
    return StepResult(
        summary="linear-probe accuracy of each encoder's embedding:",
        paths={"encoder and card": folder},
        tables={"comparison": comparison},
        shown=shown.to_string(float_format=lambda v: f"{v:.2f}"),
    )


def finetune_step(config: FinetuneConfig) -> StepResult:
    """Fine-tune a built-in-style model, evaluate it, write its card."""
    from interp.organism.build import finetune_organism

    folder, metrics = finetune_organism(config)
    shown = metrics.drop(columns=[c for c in ("mean_error",) if c in metrics])
    return StepResult(
        summary="held-out accuracy after fine-tuning:",
        paths={"model and card": folder},
        tables={"metrics": metrics},
        shown=shown.to_string(index=False, float_format=_three),
    )


COMMANDS = [
    Command(
        name="organism train",
        help="train it from scratch on the CPU, evaluate it, write its model card",
        description="Writes a save_pretrained folder with README.md (the model card).",
        config=OrganismTrainConfig,
        step=train_step,
    ),
    Command(
        name="organism eval",
        help="held-out accuracy per question type, beside chance",
        description="Prints the held-out accuracy per question type; writes nothing.",
        config=OrganismEvalConfig,
        step=eval_step,
    ),
    Command(
        name="organism train-ssl",
        help="train its world's self-supervised encoder (the blind pairs' reference)",
        description="Writes a save_pretrained Dinov2Model folder with README.md: the recipe "
        "and linear probes of its embedding beside the organism's CLIP tower.",
        config=SslTrainConfig,
        step=train_ssl_step,
    ),
    Command(
        name="organism finetune",
        help="continue training a built-in-style model (complexity, encoder, pixel task)",
        description="Writes a save_pretrained folder with README.md (recipe, time, held-out "
        "accuracy at the training complexity and on lone objects) and training_log.csv.",
        config=FinetuneConfig,
        step=finetune_step,
    ),
]
