"""Linear probes on cached activations, and sweeps over sites x attributes x conditions."""

from probes.linear import LinearProbe
from probes.sweep import TABLE_COLUMNS, cross_validate_probe, sweep

__all__ = ["TABLE_COLUMNS", "LinearProbe", "cross_validate_probe", "sweep"]
