"""Config dataclasses whose fields are command-line options.

The same dataclass drives the notebook API and the CLI: declare fields with
:func:`option` (a help text beside the default) and :func:`add_options` turns them into
``--flags`` typed from the annotations.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import types
import typing
import warnings
from collections.abc import Callable, Iterable
from typing import Any

from interp.errors import ConfigError
from interp.names import as_names

__all__ = ["Settings", "add_options", "check_options", "option", "renamed_options"]


def option(
    help_text: str,
    *,
    aliases: tuple[str, ...] = (),
    positional: bool = False,
    minimum: float | None = None,
    maximum: float | None = None,
    choices: Iterable[Any] | None = None,
    **field_kwargs: Any,
) -> Any:
    """A dataclass field with a ``--help`` text (``default=`` etc. as for ``field``);
    ``aliases``: other flags for the same option (e.g. ``("--label-columns",)``);
    ``positional``: a required positional argument on the command line (e.g. a path);
    ``minimum``, ``maximum``, ``choices``: the rule its values follow, declared here once
    and checked by :func:`check_options` (for a list option, every item)."""
    metadata = {
        "help": help_text,
        "aliases": aliases,
        "positional": positional,
        "minimum": minimum,
        "maximum": maximum,
        "choices": None if choices is None else tuple(choices),
    }
    return dataclasses.field(metadata=metadata, **field_kwargs)


def _shown(values: Iterable[Any]) -> str:
    return ", ".join(map(str, values))


def check_options(config: Any) -> None:
    """Every option's declared rule, checked (a ConfigError naming the parameter, what
    it must be and what it got); a single value given for a list option becomes a list
    of one, and a list option's items are checked one by one. None means "not given"
    and passes."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if value is None:
            continue
        base = _base_type(hints[f.name])
        many = typing.get_origin(base) is list
        if many and typing.get_args(base)[0] is str:
            value = as_names(value, f.name)  # one name, or distinct names in order
            setattr(config, f.name, value)
        elif many:
            value = [value] if isinstance(value, (int, float)) else list(value)
            setattr(config, f.name, value)
        items = value if many else [value]
        rule = f.metadata
        low, high, choices = rule.get("minimum"), rule.get("maximum"), rule.get("choices")
        if low is not None and any(v < low for v in items):
            if high is not None:
                raise ConfigError(f"{f.name} must lie in [{low}, {high}], got {value}")
            raise ConfigError(f"{f.name} must be >= {low}, got {value}")
        if high is not None and any(v > high for v in items):
            if low is not None:
                raise ConfigError(f"{f.name} must lie in [{low}, {high}], got {value}")
            raise ConfigError(f"{f.name} must be <= {high}, got {value}")
        if choices is not None:
            unknown = [v for v in items if v not in choices]
            if unknown:
                got = unknown if many else repr(unknown[0])
                raise ConfigError(f"{f.name} must be one of {_shown(choices)}, got {got}")


@dataclasses.dataclass
class Settings:
    """Base of every settings dataclass: on creation the options' declared rules are
    checked (:func:`check_options`), then the rules that tie several options together
    (:meth:`check`, which a class overrides)."""

    def __post_init__(self) -> None:
        check_options(self)
        self.check()

    def check(self) -> None:
        """Rules between options (a class's own; its bases' run through ``super()``)."""


def renamed_options(**renames: str) -> Callable[[type], type]:
    """Class decorator for settings whose options were renamed (``batch="batch_size"``):
    the old keyword and flag still work for one release, with a FutureWarning that names
    the new one; the old flag is left out of ``--help``."""

    def wrap(cls: type) -> type:
        init = cls.__init__

        @functools.wraps(init)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            for old, new in renames.items():
                if old in kwargs:
                    if new in kwargs:
                        raise ConfigError(f"give {new} once: {old} is its old name")
                    _warn_renamed(old, new)
                    kwargs[new] = kwargs.pop(old)
            init(self, *args, **kwargs)

        cls.__init__ = __init__  # type: ignore[method-assign]
        cls.renamed_options = {**getattr(cls, "renamed_options", {}), **renames}
        return cls

    return wrap


def _warn_renamed(old: str, new: str, stacklevel: int = 3) -> None:
    warnings.warn(
        f"{old} is renamed {new}; {old} will be removed in the next release",
        FutureWarning,
        stacklevel=stacklevel,
    )


class _Renamed(argparse.Action):
    """An old flag: warns, then stores its value under the new option's name."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # type: ignore[override]
        _warn_renamed(str(option_string), "--" + self.dest.replace("_", "-"), stacklevel=2)
        setattr(namespace, self.dest, values)


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
    types_of = {f.name: _base_type(hints[f.name]) for f in dataclasses.fields(cls)}
    for old, new in getattr(cls, "renamed_options", {}).items():
        kind = types_of[new]
        parser.add_argument(
            "--" + old.replace("_", "-"),
            dest=new,
            action=_Renamed,
            type=None if kind is bool else kind,
            help=argparse.SUPPRESS,
        )
    parser.set_defaults(**{f.name: None for f in dataclasses.fields(cls)})
