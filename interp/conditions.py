"""Experimental condition names: the vocabulary the command line, the cache and the tables
share (light: no torch). A condition is a kind and, for some kinds, an argument after a
colon:

- ``baseline``: the model as it is;
- ``shuffle`` / ``shuffle:SEED``: the patch tokens entering the LLM permuted (seeded);
- ``lower_mask``: no position attends to the image tokens in the lower 25% of LM layers;
- ``mask:A-B``: the same in LM layers ``A`` to ``B`` (inclusive); ``mask:A-B:text``:
  only the text positions lose the image (image tokens still attend to each other);
- ``drop:POLICY:K``: only ``K`` image tokens stay in the LLM's input, chosen by ``POLICY``
  (``random``, ``on_object``, ``off_object``, ``norm``: largest norm); the others are
  removed (no position attends to them) and the kept ones keep their positions;
- ``mean:SITE``: every image token at ``SITE`` replaced by that token position's mean
  over the data set;
- ``zero:SITE``: every image token at ``SITE`` set to zero;
- ``patch:SITE``: every image token at ``SITE`` taken from a partner image of the data
  set (a seeded pairing of the images of each size);
- ``sae:SITE:PATH``: every image token at ``SITE`` replaced by its reconstruction by the
  sparse autoencoder in the folder ``PATH`` (SAELens's files; ``interp sae train`` writes
  them).

:mod:`interp.experiments.interventions` makes the intervention of each kind (a registry).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from interp.errors import ConfigError
from interp.sites import parse_site

__all__ = [
    "CONDITIONS",
    "CONDITION_SYNTAX",
    "DROP_POLICIES",
    "Condition",
    "condition_parts",
    "drop_conditions",
    "parse_condition",
    "window_conditions",
]

# The conditions a VLM runs when none are named.
CONDITIONS: tuple[str, ...] = ("baseline", "shuffle", "lower_mask")
# Every kind, and how it is written.
CONDITION_SYNTAX: dict[str, str] = {
    "baseline": "baseline",
    "shuffle": "shuffle or shuffle:SEED",
    "lower_mask": "lower_mask",
    "mask": "mask:A-B or mask:A-B:text (LM layers A to B)",
    "drop": "drop:POLICY:K (K image tokens kept; POLICY random, on_object, off_object or norm)",
    "mean": "mean:SITE (e.g. mean:projector)",
    "zero": "zero:SITE (tokens at SITE set to zero)",
    "patch": "patch:SITE (tokens at SITE from a partner image)",
    "sae": "sae:SITE:PATH (tokens at SITE through the sparse autoencoder in folder PATH)",
}
DROP_POLICIES: tuple[str, ...] = ("random", "on_object", "off_object", "norm")
_ARGUMENT = {
    "shuffle": re.compile(r"^\d+$"),
    "mask": re.compile(r"^(\d+)-(\d+)(:text)?$"),
    "drop": re.compile(r"^([a-z_]+):(\d+)$"),
    "mean": re.compile(r"^(.+)$"),
    "zero": re.compile(r"^(.+)$"),
    "patch": re.compile(r"^(.+)$"),
    "sae": re.compile(r"^([^:]+):(.+)$"),
}
_NEEDS_ARGUMENT = {
    "mask": "mask:0-1",
    "drop": "drop:random:8",
    "mean": "mean:projector",
    "zero": "zero:projector",
    "patch": "patch:projector",
    "sae": "sae:projector:saes/projector/topk-x8-k16",
}


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
    if kind in _NEEDS_ARGUMENT and not argument:
        raise ConfigError(
            f"condition {kind!r} needs its argument, e.g. {_NEEDS_ARGUMENT[kind]}; got {name!r}"
        )
    found = pattern.match(argument) if pattern is not None and argument else None
    if argument and found is None:
        raise ConfigError(f"condition {name!r} is malformed; write {CONDITION_SYNTAX[kind]}")
    if found is not None:  # one spelling per condition: shuffle:07 is shuffle:7
        argument = _canonical_argument(kind, name, found)
    canonical = f"{kind}:{argument}" if argument else kind
    return Condition(name=canonical, kind=kind, argument=argument or None)


def _canonical_argument(kind: str, name: str, found: re.Match) -> str:
    """The one spelling of a condition's argument, checked."""
    if kind == "shuffle":
        return str(int(found.group(0)))
    if kind == "mask":
        first, last = int(found.group(1)), int(found.group(2))
        if first > last:
            raise ConfigError(f"condition {name!r}: the first layer must not exceed the last")
        return f"{first}-{last}{found.group(3) or ''}"
    if kind == "drop":
        policy, k = found.group(1), int(found.group(2))
        if policy not in DROP_POLICIES:
            policies = ", ".join(DROP_POLICIES)
            raise ConfigError(f"condition {name!r}: unknown policy {policy!r}; use {policies}")
        if k < 1:
            raise ConfigError(f"condition {name!r} keeps no image token; K must be at least 1")
        return f"{policy}:{k}"
    if kind == "sae":
        return f"{parse_site(found.group(1)).name}:{found.group(2)}"
    return parse_site(found.group(1)).name  # mean:SITE, zero:SITE, patch:SITE


def window_conditions(n_layers: int, width: int) -> list[str]:
    """``mask:A-B`` windows of ``width`` LM layers sliding over ``n_layers`` (step 1)."""
    if not 1 <= width <= n_layers:
        raise ConfigError(f"windows must be 1 to {n_layers} LM layers wide, got {width}")
    return [f"mask:{a}-{a + width - 1}" for a in range(n_layers - width + 1)]


def drop_conditions(ks: Sequence[int], policies: Sequence[str] | None = None) -> list[str]:
    """``drop:POLICY:K`` for every policy (default: all) and every ``K``."""
    chosen = list(policies or DROP_POLICIES)
    return [parse_condition(f"drop:{p}:{int(k)}").name for p in chosen for k in ks]


def condition_parts(condition: str) -> tuple[str, list[str]]:
    """A condition's kind and its argument's parts (``drop:norm:8`` -> ``("drop",
    ["norm", "8"])``)."""
    parsed = parse_condition(condition)
    return parsed.kind, (parsed.argument or "").replace("-", ":").split(":")
