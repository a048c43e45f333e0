"""Experiments over caches and probes, their figures, and the one-command pipeline."""

from analyses.figures import layer_attribute_heatmap, redundancy_curves
from analyses.outputs import write_figure, write_picture, write_table
from analyses.pictures import reconstruction_grid
from analyses.pipeline import OUTPUT_FILES, RunConfig, RunResult, run

__all__ = [
    "OUTPUT_FILES",
    "RunConfig",
    "RunResult",
    "layer_attribute_heatmap",
    "reconstruction_grid",
    "redundancy_curves",
    "run",
    "write_figure",
    "write_picture",
    "write_table",
]
