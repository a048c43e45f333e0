"""Linear probes on cached activations: estimators, sweeps with controls, pixel probes."""

from probes.crossval import sklearn_backend, torch_backend
from probes.linear import LinearProbe, RidgeProbe
from probes.pixels import pixel_sweep, reconstruct_pixels
from probes.selections import default_selections
from probes.sweep import TABLE_COLUMNS, ProbeSettings, sweep

__all__ = [
    "TABLE_COLUMNS",
    "LinearProbe",
    "ProbeSettings",
    "RidgeProbe",
    "default_selections",
    "pixel_sweep",
    "reconstruct_pixels",
    "sklearn_backend",
    "sweep",
    "torch_backend",
]
