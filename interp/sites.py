"""Canonical capture-site names, used for cache datasets, probe tables and plot labels.

``vision.<i>``: output of vision-encoder layer ``i`` (patch tokens only);
``projector``: output of the multimodal projector (the image tokens entering the LLM);
``lm.<i>``: output of language-model decoder layer ``i`` at the image-token positions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from interp.errors import SiteError

__all__ = ["Site", "parse_site", "all_sites", "sort_sites"]

_STAGES = {"vision": 0, "projector": 1, "lm": 2}
_PATTERN = re.compile(r"^(vision|lm)\.(\d+)$|^(projector)$")


@dataclass(frozen=True, order=True)
class Site:
    """A parsed site name; sorts in forward-pass (depth) order."""

    stage_order: int
    layer: int
    stage: str

    @property
    def name(self) -> str:
        return self.stage if self.stage == "projector" else f"{self.stage}.{self.layer}"

    def __str__(self) -> str:
        return self.name


def parse_site(name: str) -> Site:
    """Parse a site name without checking it against a model."""
    match = _PATTERN.match(name.strip())
    if not match:
        raise SiteError(
            f"malformed site name {name!r}; expected 'vision.<i>', 'projector' or 'lm.<i>'"
        )
    if match.group(3):
        return Site(_STAGES["projector"], 0, "projector")
    stage, layer = match.group(1), int(match.group(2))
    return Site(_STAGES[stage], layer, stage)


def all_sites(n_vision_layers: int, n_lm_layers: int, *, projector: bool = True) -> list[str]:
    """Every site of a model with these layer counts, in depth order."""
    return (
        [f"vision.{i}" for i in range(n_vision_layers)]
        + (["projector"] if projector else [])
        + [f"lm.{i}" for i in range(n_lm_layers)]
    )


def sort_sites(names: list[str]) -> list[str]:
    """Sort site names in forward-pass order (vision layers, projector, LM layers), each
    once."""
    return [s.name for s in sorted({parse_site(n) for n in names})]
