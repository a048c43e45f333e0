"""``interp info``: what a cache holds, and whether it is complete."""

from __future__ import annotations

from dataclasses import dataclass

from analyses.commands.command import Command, StepResult
from analyses.commands.options import check_named
from interp.options import Settings, option

__all__ = ["InfoConfig", "info_step", "COMMAND"]


@dataclass
class InfoConfig(Settings):
    """``interp info``: a cache's contents and state."""

    cache: str = option(
        "a cache file (or the path of an unfinished one)", default="", positional=True
    )

    def check(self) -> None:
        check_named(self.cache, "cache", "a cache file (interp extract writes one)")


def info_step(config: InfoConfig) -> StepResult:
    """What the cache holds (sites, conditions, images, settings) and whether it is
    complete; writes nothing."""
    from caches.info import cache_info, format_info

    found = cache_info(config.cache)
    first, _, rest = format_info(found).partition("\n")
    return StepResult(summary=first, shown=rest, extras={"info": found})


COMMAND = Command(
    name="info",
    help="what a cache holds, and whether it is complete",
    description="Prints the cache's sites, conditions, images and settings; writes nothing.",
    config=InfoConfig,
    step=info_step,
)
