"""Models and data: the shared vocabulary (errors, sites, conditions, token layouts), model
access (``models``, ``adapters``), data (``sources``, ``stimuli``), experiments on a live
model (``experiments``) and the built-in organism (``organism``)."""

from interp.conditions import CONDITIONS, parse_condition
from interp.errors import (
    CacheError,
    ConfigError,
    DiskFullError,
    InterpError,
    InterventionError,
    ModelLoadError,
    OutputExistsError,
    SiteError,
    UnsupportedModelError,
)
from interp.layout import TokenLayout, box_label_map
from interp.lazy import lazy_exports
from interp.sites import all_sites, parse_site, sort_sites
from interp.stimuli import Stimuli, StimulusSpec, generate, patch_label_map

# Models, capture and interventions import torch and nnsight: loaded when first used.
__getattr__ = lazy_exports(
    __name__,
    {
        **dict.fromkeys(
            ("Adapter", "adapter_for", "register_adapter", "registered_families"),
            "interp.adapters",
        ),
        **dict.fromkeys(("Captured", "capture", "capture_tokens"), "interp.models.tracing"),
        **dict.fromkeys(
            (
                "LayerWindowMask",
                "LowerLayerMask",
                "ShufflePatches",
                "make_intervention",
                "register_intervention",
            ),
            "interp.experiments.interventions",
        ),
        **dict.fromkeys(("BUILTIN_MODELS", "LoadedModel", "load_model"), "interp.models.loading"),
    },
)

__all__ = [
    "Adapter",
    "BUILTIN_MODELS",
    "CONDITIONS",
    "Captured",
    "CacheError",
    "ConfigError",
    "DiskFullError",
    "InterpError",
    "InterventionError",
    "LayerWindowMask",
    "LoadedModel",
    "LowerLayerMask",
    "ModelLoadError",
    "OutputExistsError",
    "ShufflePatches",
    "SiteError",
    "TokenLayout",
    "Stimuli",
    "StimulusSpec",
    "UnsupportedModelError",
    "adapter_for",
    "all_sites",
    "box_label_map",
    "capture",
    "capture_tokens",
    "generate",
    "load_model",
    "make_intervention",
    "parse_condition",
    "parse_site",
    "patch_label_map",
    "register_adapter",
    "register_intervention",
    "registered_families",
    "sort_sites",
]
