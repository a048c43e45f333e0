"""Access to models: stimuli, family adapters, capture and interventions (built on nnsight)."""

from interp.adapters import Adapter, adapter_for, register_adapter, registered_families
from interp.capture import Captured, capture, capture_tokens
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
from interp.interventions import CONDITIONS, LowerLayerMask, ShufflePatches, make_intervention
from interp.layout import TokenLayout, box_label_map
from interp.loading import BUILTIN_MODELS, LoadedModel, load_model
from interp.sites import all_sites, parse_site, sort_sites
from interp.stimuli import Stimuli, StimulusSpec, generate, patch_label_map

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
    "parse_site",
    "patch_label_map",
    "register_adapter",
    "registered_families",
    "sort_sites",
]
