"""Experiments over caches and probes, their figures, and the one-command pipeline."""

from analyses.figures import layer_attribute_heatmap
from analyses.outputs import write_figure, write_table
from analyses.pipeline import OUTPUT_FILES, RunConfig, RunResult, run

__all__ = [
    "OUTPUT_FILES",
    "RunConfig",
    "RunResult",
    "layer_attribute_heatmap",
    "run",
    "write_figure",
    "write_table",
]
