"""Experiments over caches and probes, their figures, and the one-command pipeline."""

from analyses.figures import layer_attribute_heatmap, redundancy_curves, token_count_curves
from analyses.outputs import write_figure, write_picture, write_table
from analyses.pictures import reconstruction_grid
from interp.lazy import lazy_exports

# The pipeline runs models: loaded when first used, so figures import light.
__getattr__ = lazy_exports(
    __name__,
    {
        "OUTPUT_FILES": "analyses.files",
        "RunConfig": "analyses.commands.run",
        "StepResult": "analyses.commands.command",
        "run": "analyses.commands.run",
    },
)

__all__ = [
    "OUTPUT_FILES",
    "RunConfig",
    "StepResult",
    "layer_attribute_heatmap",
    "reconstruction_grid",
    "redundancy_curves",
    "token_count_curves",
    "run",
    "write_figure",
    "write_picture",
    "write_table",
]
