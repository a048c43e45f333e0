"""The commands of ``interp``, one module each: its settings (a dataclass whose fields are
its options), its step (settings -> :class:`StepResult`) and its help, declared together
as a :class:`Command`. The option groups several commands share are in
:mod:`analyses.commands.options`.

The same dataclasses and steps are the Python API::

    from analyses.commands import ExtractConfig, extract_step
    result = extract_step(ExtractConfig(out="study", n_images=64))
    result.paths["cache"]
"""

from __future__ import annotations

import importlib

from analyses.commands.command import Command, StepResult
from interp.lazy import lazy_exports

# The command modules, in the order ``interp --help`` lists them.
MODULES = (
    "run", "extract", "probe", "pixels", "plot", "answers", "patch", "attribute", "lens",
    "attention", "mine", "pairs_eval", "mof", "redundancy", "report", "view", "info", "sae",
    "organism", "experiment",
)  # fmt: skip
# The groups of commands (``interp organism train``): their help.
GROUPS = {
    "sae": "sparse autoencoders of a cache's sites: the features the model forms",
    "organism": "the built-in trained model organism",
    "experiment": "fine-tuning experiments on the built-in model (writes tables, figures)",
}

# Each command's settings and step, importable from here (loaded on first use).
_EXPORTS = {
    "RunConfig": "run", "run": "run",
    "ExtractConfig": "extract", "extract_step": "extract",
    "ProbeConfig": "probe", "probe_step": "probe",
    "PixelConfig": "pixels", "pixel_step": "pixels",
    "PlotConfig": "plot", "plot_step": "plot",
    "AnswersConfig": "answers", "answers_step": "answers",
    "PatchConfig": "patch", "patch_step": "patch",
    "AttributeConfig": "attribute", "attribute_step": "attribute",
    "LensConfig": "lens", "lens_step": "lens",
    "AttentionConfig": "attention", "attention_step": "attention",
    "MineConfig": "mine", "mine_step": "mine",
    "PairsEvalConfig": "pairs_eval", "pairs_eval_step": "pairs_eval",
    "MofConfig": "mof", "mof_step": "mof",
    "RedundancyConfig": "redundancy", "redundancy_step": "redundancy",
    "ReportConfig": "report", "report_step": "report",
    "ViewConfig": "view", "view_step": "view", "explore": "view",
    "InfoConfig": "info", "info_step": "info",
    "SaeTrainConfig": "sae", "sae_train_step": "sae",
    "SaeFeaturesConfig": "sae", "sae_features_step": "sae",
    "SaePagesConfig": "sae", "sae_pages_step": "sae",
}  # fmt: skip
__getattr__ = lazy_exports(__name__, {k: f"{__name__}.{m}" for k, m in _EXPORTS.items()})

__all__ = ["Command", "GROUPS", "MODULES", "StepResult", "all_commands", *_EXPORTS]


def all_commands() -> list[Command]:
    """Every command, in ``MODULES`` order (a module declares ``COMMAND`` or, for a group
    such as ``organism``, ``COMMANDS``)."""
    found: list[Command] = []
    for name in MODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        found += getattr(module, "COMMANDS", None) or [module.COMMAND]
    return found
