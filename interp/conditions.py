"""Experimental condition names: the vocabulary the command line, the cache and the tables
share (light: no torch). A condition is a kind and, for some kinds, an argument after a
colon:

- ``baseline``: the model as it is;
- ``shuffle`` / ``shuffle:SEED``: the patch tokens entering the LLM permuted (seeded);
- ``lower_mask``: no position attends to the image tokens in the lower 25% of LM layers;
- ``mask:A-B``: the same in LM layers ``A`` to ``B`` (inclusive).

:mod:`interp.interventions` makes the intervention of each kind (a registry).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from interp.errors import ConfigError

__all__ = ["CONDITIONS", "CONDITION_SYNTAX", "Condition", "parse_condition"]

# The conditions a VLM runs when none are named.
CONDITIONS: tuple[str, ...] = ("baseline", "shuffle", "lower_mask")
# Every kind, and how it is written.
CONDITION_SYNTAX: dict[str, str] = {
    "baseline": "baseline",
    "shuffle": "shuffle or shuffle:SEED",
    "lower_mask": "lower_mask",
    "mask": "mask:A-B (LM layers A to B)",
}
_ARGUMENT = {"shuffle": re.compile(r"^\d+$"), "mask": re.compile(r"^(\d+)-(\d+)$")}


@dataclass(frozen=True)
class Condition:
    """A parsed condition name: ``kind`` and its ``argument`` (None where it has none)."""

    name: str
    kind: str
    argument: str | None = None


def parse_condition(name: str) -> Condition:
    """``name`` as a :class:`Condition`; a ConfigError that shows the syntax otherwise."""
    if not isinstance(name, str):
        raise ConfigError(f"a condition is a name such as 'shuffle', got {name!r}")
    kind, _, argument = name.partition(":")
    syntax = "; ".join(CONDITION_SYNTAX.values())
    if kind not in CONDITION_SYNTAX:
        raise ConfigError(f"unknown condition {name!r}; conditions are written {syntax}")
    pattern = _ARGUMENT.get(kind)
    if pattern is None and argument:
        raise ConfigError(f"condition {kind!r} takes no argument, got {name!r}")
    if kind == "mask" and not argument:
        raise ConfigError(f"condition 'mask' needs its layers, e.g. mask:0-1; got {name!r}")
    found = pattern.match(argument) if pattern is not None and argument else None
    if argument and found is None:
        raise ConfigError(f"condition {name!r} is malformed; write {CONDITION_SYNTAX[kind]}")
    if kind == "mask" and int(found.group(1)) > int(found.group(2)):
        raise ConfigError(f"condition {name!r}: the first layer must not exceed the last")
    if found is not None:  # one spelling per condition: shuffle:07 is shuffle:7
        argument = (
            "-".join(str(int(v)) for v in found.groups()) if kind == "mask" else str(int(argument))
        )
    canonical = f"{kind}:{argument}" if argument else kind
    return Condition(name=canonical, kind=kind, argument=argument or None)
