"""One vocabulary across the command line: every command's parser is walked, and the same
things are said with the same words (one spelling per option, one kind of value per
option, ``--out`` a folder everywhere, no help text naming a flag its command lacks)."""

from __future__ import annotations

import argparse
import re
from collections import defaultdict

import pytest

from analyses.cli import build_parser

# Spellings other tools use for the toolkit's options: none may be offered.
SYNONYMS = {
    "--batch": "--batch-size",
    "--bs": "--batch-size",
    "--device": "--device-map",
    "--output": "--out",
    "--outdir": "--out",
    "--output-dir": "--out",
    "--out-dir": "--out",
    "--num-images": "--n-images",
    "--n-bootstrap": "--n-boot",
    "--folds": "--n-splits",
    "--label-column": "--attributes",
    "--site": "--sites",
    "--condition": "--conditions",
    "--layer": "--layers",
}


def _commands(parser: argparse.ArgumentParser, prefix: str = "interp"):
    """(name, parser) of every command that runs something."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if any(isinstance(a, argparse._SubParsersAction) for a in sub._actions):
                    yield from _commands(sub, f"{prefix} {name}")
                else:
                    yield f"{prefix} {name}", sub


COMMANDS = dict(_commands(build_parser()))


def _shown(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The options ``--help`` shows (renamed spellings are hidden)."""
    return [a for a in parser._actions if a.help != argparse.SUPPRESS and a.dest != "help"]


def _kind(action: argparse.Action) -> str:
    if isinstance(action, argparse.BooleanOptionalAction):
        return "switch"
    many = action.nargs in ("+", "*")
    return f"{'list of ' if many else ''}{getattr(action.type, '__name__', 'str')}"


def test_every_command_is_walked() -> None:
    assert len(COMMANDS) >= 20
    assert {"interp extract", "interp organism finetune", "interp experiment encoder"} <= set(
        COMMANDS
    )


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_no_command_offers_another_spelling(name) -> None:
    flags = {flag for a in _shown(COMMANDS[name]) for flag in a.option_strings}
    offered = {flag: SYNONYMS[flag] for flag in flags if flag in SYNONYMS}
    assert not offered, f"{name} offers {offered}: say it the one way"


def test_the_same_option_takes_the_same_kind_of_value_everywhere() -> None:
    kinds: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for name, parser in COMMANDS.items():
        for action in _shown(parser):
            if action.option_strings:
                kinds[action.option_strings[0]][_kind(action)].add(name)
    differing = {flag: dict(found) for flag, found in kinds.items() if len(found) > 1}
    assert not differing, differing


def test_out_is_a_folder_on_every_command_that_writes() -> None:
    for name, parser in COMMANDS.items():
        out = [a for a in parser._actions if "--out" in a.option_strings]
        if name in ("interp info", "interp organism eval"):  # they print, and write nothing
            assert not out, name
            continue
        assert out, f"{name} writes but offers no --out"
        assert "folder" in out[0].help, f"{name}: --out {out[0].help!r}"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_names_only_flags_its_command_has(name) -> None:
    parser = COMMANDS[name]
    flags = {flag for a in parser._actions for flag in a.option_strings}
    flags |= {"--no-" + f.removeprefix("--") for f in flags}
    texts = [parser.description or "", *(a.help or "" for a in _shown(parser))]
    named = {flag for text in texts for flag in re.findall(r"--[a-z][a-z0-9-]*", text)}
    assert named <= flags, f"{name}'s help names {sorted(named - flags)}, which it lacks"
