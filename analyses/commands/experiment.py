"""``interp experiment complexity | encoder``: the fine-tuning experiments on the built-in
model (their settings and work in :mod:`analyses.experiments`)."""

from __future__ import annotations

from analyses.commands.command import Command, StepResult
from analyses.experiments import ComplexityExperimentConfig, EncoderExperimentConfig

__all__ = ["COMMANDS"]


def complexity_step(config: ComplexityExperimentConfig) -> StepResult:
    """Fine-tune at a low and a high complexity; compression, probes and answers."""
    from analyses.experiments import complexity_experiment

    paths = complexity_experiment(config)
    return StepResult(summary=f"the complexity experiment: {len(paths)} files", paths=paths)


def encoder_step(config: EncoderExperimentConfig) -> StepResult:
    """Fine-tune with the pixel task, the encoder frozen vs adapted."""
    from analyses.experiments import encoder_experiment

    paths = encoder_experiment(config)
    return StepResult(summary=f"the encoder experiment: {len(paths)} files", paths=paths)


COMMANDS = [
    Command(
        name="experiment complexity",
        help="fine-tune at a low and a high complexity; compression, probes, answers",
        description="Writes OUT/redundancy.csv, probes.csv, answers.csv, "
        "compression_by_depth.html, accuracy_by_level.html, complexity_levels.png.",
        config=ComplexityExperimentConfig,
        step=complexity_step,
    ),
    Command(
        name="experiment encoder",
        help="fine-tune with the pixel task, encoder frozen vs adapted; pixel probe, shape",
        description="Writes OUT/pixels.csv, answers.csv, pixel_error_by_depth.html and "
        "a reconstructions_<model>.png per model.",
        config=EncoderExperimentConfig,
        step=encoder_step,
    ),
]
