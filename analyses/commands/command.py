"""What every command is (:class:`Command`) and what every step returns
(:class:`StepResult`): the command line prints every result the same way."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Command", "StepResult"]


@dataclass
class StepResult:
    """What a step made: its tables, the paths it wrote, a one-line summary, and (for
    the command line) the table it prints under the summary.

    A table or other product is also an attribute: ``result.answers`` is
    ``result.tables["answers"]``, ``result.embeddings`` is ``result.extras["embeddings"]``.
    """

    summary: str  # one line: what was done, in numbers
    paths: dict[str, Path] = field(default_factory=dict)  # what it wrote, by key
    tables: dict[str, Any] = field(default_factory=dict)  # name -> pandas.DataFrame
    shown: str = ""  # the table the command line prints under the summary
    extras: dict[str, Any] = field(default_factory=dict)  # figures, pictures, embeddings

    def __getattr__(self, name: str) -> Any:
        for where in ("tables", "extras"):
            held = self.__dict__.get(where, {})
            if name in held:
                return held[name]
        raise AttributeError(
            f"this step made no {name!r}; its tables: {', '.join(self.tables) or 'none'}; "
            f"its other products: {', '.join(self.extras) or 'none'}"
        )

    @property
    def table(self) -> Any:
        """The step's main table (its first)."""
        if not self.tables:
            raise AttributeError("this step made no table")
        return next(iter(self.tables.values()))

    def lines(self) -> list[str]:
        """The printed result: the summary, the shown table, one ``key: path`` per file."""
        shown = [self.shown] if self.shown else []
        wrote = [f"{key}: {Path(path).resolve()}" for key, path in self.paths.items()]
        return [self.summary, *shown, *wrote]


@dataclass(frozen=True)
class Command:
    """One command of ``interp``: its name (``extract``, ``organism train``), its help,
    its settings (a dataclass of options) and its step (settings -> StepResult)."""

    name: str
    help: str
    description: str
    config: type
    step: Callable[[Any], StepResult]
