"""MkDocs hooks: the pages generated from the code, so that they cannot drift from it.

- ``reference/cli.md``: every command's help and options, from the parsers
  (:func:`analyses.cli.build_parser`);
- ``families.md``: the table of supported families, from the adapter registry
  (:mod:`interp.adapters`), each with its adapter module's own description;
- ``index.md``: the README, its links made site links;
- ``reference/<package>.md``: the API reference of each package, rendered by
  mkdocstrings from the docstrings.
"""

from __future__ import annotations

import argparse
import importlib
import inspect

from mkdocs.structure.files import File, Files

API = {
    "interp": [
        "interp",
        "interp.adapters",
        "interp.sources",
        "interp.conditions",
        "interp.layout",
        "interp.models.sae",
        "interp.experiments.attribution",
    ],
    "caches": ["caches", "caches.reader", "caches.writer"],
    "probes": [
        "probes",
        "probes.linear",
        "probes.sweep",
        "probes.pixels",
        "probes.mixture",
        "probes.sae_training",
        "probes.sae_features",
    ],
    "analyses": [
        "analyses",
        "analyses.commands",
        "analyses.commands.command",
        "analyses.commands.options",
        "analyses.figures",
        "analyses.redundancy",
        "analyses.commands.view",
        "analyses.explorer.build",
        "analyses.explorer.page",
    ],
}


def on_files(files: Files, config) -> Files:
    files.append(File.generated(config, "index.md", content=home_page()))
    files.append(File.generated(config, "reference/cli.md", content=cli_page()))
    for package, modules in API.items():
        body = "\n\n".join(f"::: {module}" for module in modules)
        page = f"# API: `{package}`\n\n{body}\n"
        files.append(File.generated(config, f"reference/{package}.md", content=page))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    if page.file.src_uri == "families.md":
        return markdown.replace("<!-- families table -->", families_table())
    return markdown


def _parsers(parser: argparse.ArgumentParser, prefix: str = "interp"):
    """(command, parser) for every command that runs something, in the order of --help."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                nested = any(isinstance(a, argparse._SubParsersAction) for a in sub._actions)
                if nested:
                    yield from _parsers(sub, f"{prefix} {name}")
                else:
                    yield f"{prefix} {name}", helps.get(name, ""), sub


def _cell(text: str) -> str:
    return " ".join(str(text or "").split()).replace("|", "\\|")


def cli_page() -> str:
    """Every command: its help, its description and a table of its options."""
    from analyses.cli import build_parser

    lines = [
        "# Command line",
        "",
        "Generated from the parsers (`analyses.cli.build_parser`): every command, its "
        "options and their defaults. The same options are the fields of each command's "
        "settings dataclass in Python (`analyses.commands`).",
        "",
    ]
    for name, help_text, parser in _parsers(build_parser()):
        lines += [f"## `{name}`", "", _cell(help_text) + ".", ""]
        if parser.description:
            lines += [_cell(parser.description), ""]
        lines += ["| option | meaning |", "|---|---|"]
        for action in parser._actions:
            if action.dest == "help":
                continue
            if action.option_strings:
                shown = ", ".join(f"`{flag}`" for flag in action.option_strings)
                if action.metavar:
                    shown += f" `{action.metavar}`"
            else:
                shown = f"`{action.metavar or action.dest}` (positional)"
            lines.append(f"| {shown} | {_cell(action.help).replace('%%', '%')} |")
        lines.append("")
    return "\n".join(lines)


def families_table() -> str:
    """One row per registered adapter: family, config model types, kind, hub ids, and
    the adapter module's description."""
    from interp.adapters.base import _REGISTRY
    from interp.adapters.encoder import VisionEncoderAdapter

    rows = ["| family | model_type | kind | adapter | checkpoints |", "|---|---|---|---|---|"]
    notes = []
    for cls in dict.fromkeys(_REGISTRY.values()):
        module = importlib.import_module(cls.__module__)
        kind = "vision encoder" if issubclass(cls, VisionEncoderAdapter) else "VLM"
        types = ", ".join(f"`{t}`" for t in cls.model_types)
        hubs = ", ".join(f"`{h}`" for h in getattr(cls, "hub_ids", ()))
        rows.append(f"| {cls.family} | {types} | {kind} | `{cls.__module__}` | {hubs} |")
        described = inspect.cleandoc(module.__doc__ or "")
        notes += [f"### {cls.family}", "", described, ""]
    return "\n".join([*rows, "", "## Each family's adapter", "", *notes])


def home_page() -> str:
    """The README as the site's home page (its ``docs/`` links made relative to the site)."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    return text.replace("](docs/", "](")
