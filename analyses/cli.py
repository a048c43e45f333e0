"""The ``interp`` command line (``interp`` and ``python -m interp``): above every package,
the only module that imports them all."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import re
import sys
import warnings
from collections.abc import Sequence

from interp.errors import DiskFullError, InterpError
from interp.options import add_options

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """Every command's parser, from its :class:`~analyses.commands.Command` (its options
    are its settings' fields)."""
    from analyses.commands import GROUPS, all_commands

    parser = argparse.ArgumentParser(
        prog="interp",
        description="Which visual attributes survive at each depth of a vision-language model.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}
    for command in all_commands():
        group, _, name = command.name.rpartition(" ")
        where = commands
        if group:
            if group not in groups:
                holder = commands.add_parser(group, help=GROUPS[group])
                groups[group] = holder.add_subparsers(dest="step", required=True)
            where = groups[group]
        add_options(
            where.add_parser(name, help=command.help, description=command.description),
            command.config,
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning
        # A renamed option or an old-style --out is said on every run that uses it.
        warnings.simplefilter("always", FutureWarning)
        args = parser.parse_args(argv)
        _say_notes()
        skip = ("command", "step")
        given = {k: v for k, v in vars(args).items() if k not in skip and v is not None}
        if given.get("progress") is False:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        return _dispatch(args, given)


def _dispatch(args: argparse.Namespace, given: dict) -> int:
    """Run the command; errors as one line and an exit code."""
    try:
        named = " ".join(filter(None, (args.command, getattr(args, "step", None))))
        return _step(named, given)
    except DiskFullError as err:
        print(f"interp: error: {_one_line(err)}", file=sys.stderr)
        if err.failed_write:
            # HDF5 cannot close a file whose writes failed (it crashes at exit trying);
            # the file is as it was after its last complete batch, so leave at once.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(2)
        return 2
    except InterpError as err:
        print(f"interp: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except OSError as err:  # a file-system failure no check foresaw: still one line
        print(f"interp: error: {_one_line(err)}{_fix_of(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interp: interrupted; rerun the same command to continue: an unfinished cache "
            "resumes where it stopped and a finished one is reused (only --overwrite starts "
            "again)",
            file=sys.stderr,
        )
        return 130


def _fix_of(err: OSError) -> str:
    """What to do about a file-system error, where its kind says."""
    import errno

    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return "; the disk is full: free space there or choose another --out, and run again"
    if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "; that place cannot be written: choose another --out"
    return ""


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings on the command line as ``interp: warning: ...`` lines, without source."""
    print(f"interp: warning: {_one_line(message)}", file=sys.stderr)


def _one_line(err: BaseException | Warning | str) -> str:
    return as_flags(" ".join(str(err).split())) or type(err).__name__


_ASSIGNED = re.compile(r"\b([a-z][a-z0-9_]*)=('[^']*'|\"[^\"]*\"|[^\s,;)]*)")
# A one-word parameter that a rule names: "batch must be >= 2".
_MUST = re.compile(r"(?<![-\w'\"])([a-z][a-z0-9]*)(?= must\b)")
# A parameter's name in a message (not a quoted setting: "its 'n_images' differs").
_SNAKE = re.compile(r"(?<!['\"])\b([a-z][a-z0-9]*_[a-z0-9_]+)\b(?!['\"])")


@functools.cache
def option_names() -> frozenset[str]:
    """Every option of every command and subcommand (the fields of their config
    dataclasses, as the parser declares them)."""
    names: set[str] = set()
    parsers = [build_parser()]
    while parsers:
        parser = parsers.pop()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
            elif action.option_strings and action.dest != "help":
                names.add(action.dest)
    return frozenset(names)


def as_flags(text: str) -> str:
    """A library message in command-line terms: ``overwrite=True`` -> ``--overwrite``,
    ``store_dtype='float32'`` -> ``--store-dtype float32``, ``n_splits`` -> ``--n-splits``
    (library errors name parameters; only the command line speaks of flags)."""
    names = option_names()

    def assigned(found: re.Match) -> str:
        name, value = found.group(1), found.group(2).strip("'\"")
        if name not in names:
            return found.group(0)
        flag = "--" + name.replace("_", "-")
        if value in ("True", ""):
            return flag
        if value == "False":
            return "--no-" + name.replace("_", "-")
        return f"{flag} {value}"

    text = _ASSIGNED.sub(assigned, text)
    text = _MUST.sub(
        lambda found: "--" + found.group(1) if found.group(1) in names else found.group(0), text
    )
    return _SNAKE.sub(
        lambda found: (
            "--" + found.group(1).replace("_", "-") if found.group(1) in names else found.group(0)
        ),
        text,
    )


class _Notes(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a note is made."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


_NOTES = _Notes()
_NOTES.setFormatter(logging.Formatter("interp: %(message)s"))


def _say_notes() -> None:
    """The library's notes (a reused cache, removed outputs) as ``interp: ...`` lines."""
    log = logging.getLogger("interp")
    if _NOTES not in log.handlers:
        log.addHandler(_NOTES)
        log.setLevel(logging.INFO)
        log.propagate = False


def _step(named: str, given: dict) -> int:
    """One command: its settings from the flags, its step, and what it made, printed the
    same way for every command."""
    from analyses.commands import all_commands

    found = {command.name: command for command in all_commands()}
    if named not in found:
        raise InterpError(f"unknown command {named!r}; interp --help lists the commands")
    command = found[named]
    result = command.step(command.config(**given))
    print("\n".join(result.lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
