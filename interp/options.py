"""Config dataclasses whose fields are command-line options.

The same dataclass drives the notebook API and the CLI: declare fields with
:func:`option` (a help text beside the default) and :func:`add_options` turns them into
``--flags`` typed from the annotations.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any

__all__ = ["option", "add_options"]


def option(
    help_text: str, *, aliases: tuple[str, ...] = (), positional: bool = False, **field_kwargs: Any
) -> Any:
    """A dataclass field with a ``--help`` text (``default=`` etc. as for ``field``);
    ``aliases``: other flags for the same option (e.g. ``("--label-columns",)``);
    ``positional``: a required positional argument on the command line (e.g. a path)."""
    metadata = {"help": help_text, "aliases": aliases, "positional": positional}
    return dataclasses.field(metadata=metadata, **field_kwargs)


def _base_type(hint: object) -> object:
    """``X | None`` -> ``X``; anything else unchanged."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def add_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """One ``--option`` per dataclass field, typed from its annotation.

    Options left out parse as None, so the dataclass's own defaults apply.
    """
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flags = ["--" + f.name.replace("_", "-"), *f.metadata.get("aliases", ())]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f.metadata.get("help", "")
        if f.metadata.get("positional"):
            many = typing.get_origin(_base_type(hints[f.name])) is list
            optional = f.default is None  # a positional the command may go without
            nargs = ("*" if optional else "+") if many else ("?" if optional else None)
            parser.add_argument(f.name, help=help_text, metavar=f.name.upper(), nargs=nargs)
            continue
        if "default" not in help_text:
            shown = " ".join(map(str, default)) if isinstance(default, list) else default
            help_text += f" (default: {shown})"
        help_text = help_text.replace("%", "%%")  # argparse formats help with %
        base = _base_type(hints[f.name])
        if base is bool:
            parser.add_argument(
                *flags, dest=f.name, action=argparse.BooleanOptionalAction, help=help_text
            )
        elif typing.get_origin(base) is list:
            item = typing.get_args(base)[0]
            metavar = "NAME" if item is str else "N"
            parser.add_argument(
                *flags, dest=f.name, nargs="+", type=item, help=help_text, metavar=metavar
            )
        else:
            parser.add_argument(
                *flags, dest=f.name, type=base, help=help_text, metavar=f.name.upper()
            )
    parser.set_defaults(**{f.name: None for f in dataclasses.fields(cls)})
