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
from pathlib import Path

from interp.errors import DiskFullError, InterpError
from interp.options import add_options

__all__ = ["main", "build_parser"]


# The staged commands: name -> (config class, help, description).
STEPS = {
    "extract": (
        "ExtractConfig",
        "data -> model -> cache: the activations of every site under every condition",
        "Writes the cache OUT (HDF5); resumes an unfinished one, reuses a finished one of "
        "the same settings.",
    ),
    "probe": (
        "ProbeConfig",
        "cache -> probe table: every site x condition x selection x attribute",
        "Writes OUT (CSV) and OUT.settings.json; never writes to the cache; an interrupted "
        "probe resumes, and new selections or attributes probe only the new cells.",
    ),
    "pixels": (
        "PixelConfig",
        "cache -> the pixel-value probe: reconstruction error by depth and a picture grid",
        "Writes OUT/pixel_reconstruction.csv and OUT/pixel_reconstructions.png.",
    ),
    "plot": (
        "PlotConfig",
        "table -> every figure it supports, as HTML, PDF, SVG or PNG",
        "Writes OUT/<figure>.<format> for each figure and --formats.",
    ),
    "answers": (
        "AnswersConfig",
        "data or a cache's images -> the model's answers under every condition",
        "Writes OUT/answers.csv (accuracy per condition and question type, with intervals, "
        "chance, log-probability and margin) and OUT/answer_rows.csv (per question).",
    ),
    "patch": (
        "PatchConfig",
        "a clean / corrupted pair -> activation patching on the patch grid, per depth",
        "Writes OUT/patching.csv (per site and token: the share of the clean answer's margin "
        "that restoring it brings back), OUT/patching_map_<method>.html and "
        "OUT/patching_pair.png.",
    ),
    "lens": (
        "LensConfig",
        "the logit lens: does each LM depth's image token already name its object's class?",
        "Writes OUT/lens.csv (per LM site and attribute: the class word's rank at the "
        "tokens over the object and over the background) and OUT/lens_ranks.html.",
    ),
    "attention": (
        "AttentionConfig",
        "attention from the answer position to each patch token, per LM layer and head",
        "Writes OUT/attention.csv, OUT/attention_map.html (the first image, per layer) and "
        "OUT/attention_by_layer.html; loads the model with eager attention.",
    ),
    "mine": (
        "MineConfig",
        "blind pairs: images one encoder embeds alike while another tells them apart (MMVP)",
        "Embeds every image with both encoders (kept in OUT/embeddings.h5 for a rerun), "
        "writes OUT/pairs.csv (i, j, image_i, image_j, cos_a, cos_b, and the attributes "
        "that differ) and OUT/blind_pairs.png (the top pairs).",
    ),
    "pairs-eval": (
        "PairsEvalConfig",
        "per-question and pair accuracy (both images right) of a VLM on image pairs",
        "Answers every question about both images of each pair (a pairs.csv of interp "
        "mine, or MMVP's folder); writes OUT/paired.csv (per condition and visual pattern: "
        "question and pair accuracy, chance, 95% intervals) and OUT/pair_answers.csv.",
    ),
    "mof": (
        "MofConfig",
        "Mixture-of-Features probes of two encoders' caches of the same images (MMVP)",
        "Probes each attribute on the additive mixture alpha*A + (1-alpha)*B for each alpha "
        "and on the interleaved one (both side by side); writes OUT/mof.csv and "
        "OUT/mixture_of_features.html.",
    ),
    "redundancy": (
        "RedundancyConfig",
        "how redundantly each site spreads the image over its tokens, per cache",
        "Writes OUT/redundancy.csv (per cache, site and condition: effective rank, "
        "participation ratio and mean cosine of each image's tokens, with intervals; k90 "
        "and spread per attribute from --probes tables) and OUT/redundancy_by_depth.html.",
    ),
    "report": (
        "ReportConfig",
        "a run's folder -> one self-contained HTML page of every figure, table and setting",
        "Writes RUN/report.html (or OUT).",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    import analyses.config as configs

    parser = argparse.ArgumentParser(
        prog="interp",
        description="Which visual attributes survive at each depth of a vision-language model.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="all the steps: extract, probe, pixels, plot, report (the demo's fast settings "
        "unless --full)",
        description="Writes OUT/cache.h5, OUT/probes.csv, the figures, OUT/run.json and "
        "OUT/report.html.",
    )
    add_options(run, configs.RunConfig)
    for name, (cls, help_text, description) in STEPS.items():
        step = commands.add_parser(name, help=help_text, description=description)
        add_options(step, getattr(configs, cls))
    info = commands.add_parser("info", help="what a cache holds, and whether it is complete")
    info.add_argument("cache", help="a cache file (or the path of an unfinished one)")

    from interp.organism.build import OrganismEvalConfig
    from interp.organism.training import OrganismTrainConfig

    organism = commands.add_parser("organism", help="the built-in trained model organism")
    steps = organism.add_subparsers(dest="step", required=True)
    train = steps.add_parser(
        "train",
        help="train it from scratch on the CPU, evaluate it, write its model card",
        description="Writes a save_pretrained folder with README.md (the model card).",
    )
    add_options(train, OrganismTrainConfig)
    evaluate = steps.add_parser("eval", help="held-out accuracy per question type, beside chance")
    add_options(evaluate, OrganismEvalConfig)
    from interp.organism.ssl import SslTrainConfig

    ssl = steps.add_parser(
        "train-ssl",
        help="train its world's self-supervised encoder (the blind pairs' reference)",
        description="Writes a save_pretrained Dinov2Model folder with README.md: the recipe "
        "and linear probes of its embedding beside the organism's CLIP tower.",
    )
    add_options(ssl, SslTrainConfig)
    from interp.organism.finetune import FinetuneConfig

    tune = steps.add_parser(
        "finetune",
        help="continue training a built-in-style model (complexity, encoder, pixel task)",
        description="Writes a save_pretrained folder with README.md (recipe, time, held-out "
        "accuracy at the training complexity and on lone objects) and training_log.csv.",
    )
    add_options(tune, FinetuneConfig)
    from analyses.experiments import ComplexityExperimentConfig, EncoderExperimentConfig

    experiment = commands.add_parser(
        "experiment", help="fine-tuning experiments on the built-in model (writes tables, figures)"
    )
    kinds = experiment.add_subparsers(dest="step", required=True)
    add_options(
        kinds.add_parser(
            "complexity",
            help="fine-tune at a low and a high complexity; compression, probes, answers",
            description="Writes OUT/redundancy.csv, probes.csv, answers.csv, "
            "compression_by_depth.html, accuracy_by_level.html, complexity_levels.png.",
        ),
        ComplexityExperimentConfig,
    )
    add_options(
        kinds.add_parser(
            "encoder",
            help="fine-tune with the pixel task, encoder frozen vs adapted; pixel probe, shape",
            description="Writes OUT/pixels.csv, answers.csv, pixel_error_by_depth.html and "
            "a reconstructions_<model>.png per model.",
        ),
        EncoderExperimentConfig,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _say_notes()
    given = {k: v for k, v in vars(args).items() if k not in ("command", "step") and v is not None}
    if given.get("progress") is False:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning
        return _dispatch(args, given)


def _dispatch(args: argparse.Namespace, given: dict) -> int:
    """Run the command; errors as one line and an exit code."""
    try:
        if args.command == "run":
            return _run(given)
        if args.command in STEPS:
            return _step(args.command, given)
        if args.command == "info":
            from caches.info import cache_info, format_info

            print(format_info(cache_info(given["cache"])))
            return 0
        if args.command == "experiment":
            return _experiment(args.step, given)
        organism = {
            "train": _organism_train,
            "train-ssl": _organism_train_ssl,
            "finetune": _organism_finetune,
            "eval": _organism_eval,
        }
        if args.command == "organism" and args.step in organism:
            return organism[args.step](given)
        named = " ".join(filter(None, (args.command, getattr(args, "step", None))))
        raise InterpError(f"unknown command {named!r}; interp --help lists the commands")
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


def _run(given: dict) -> int:
    from analyses.pipeline import RunConfig, run

    result = run(RunConfig(**given))
    print("results:")
    for key, path in result.paths.items():
        print(f"  {key:8s} {path.resolve()}")
    for step, why in result.skipped.items():
        print(f"skipped: {step} ({why})")
    return 0


def _step(name: str, given: dict) -> int:
    """One staged command: its config from the flags, its step, what it wrote."""
    import analyses.config as configs
    import analyses.report as report
    import analyses.steps as steps

    config = getattr(configs, STEPS[name][0])(**given)
    if name == "extract":
        print(f"cache: {steps.extract_step(config).resolve()}")
    elif name == "probe":
        table = steps.probe_step(config)
        print(f"probes: {Path(config.out).resolve()} ({len(table)} rows)")
    elif name == "pixels":
        for key, path in steps.pixel_step(config).paths.items():
            print(f"{key}: {path.resolve()}")
    elif name == "answers":
        result = steps.answers_step(config)
        shown = result.summary.pivot_table(
            index="condition", columns="question_type", values="accuracy", sort=False
        )
        print(shown.to_string(float_format=lambda v: f"{v:.2f}"))
        for key, path in result.paths.items():
            print(f"{key}: {path.resolve()}")
    elif name == "patch":
        result = steps.patch_step(config)
        table = result.table
        single = table[table.token >= 0].groupby(["method", "site"], sort=False)["restored"]
        shown = single.agg(best_token="max", sum_of_tokens="sum")
        every = table[table.token < 0].set_index(["method", "site"])["restored"]
        shown["every_token"] = every.reindex(shown.index)
        print("share of the clean answer's margin restored:")
        print(shown.round(3).to_string(na_rep="-"))
        for key, path in result.paths.items():
            print(f"{key}: {path.resolve()}")
    elif name in ("lens", "attention"):
        table, paths = getattr(steps, f"{name}_step")(config)
        if name == "lens":
            shown = table[table.tokens == "on_object"].pivot_table(
                index="site", columns="attribute", values="median_rank", sort=False
            )
            print("median rank of the class word at the tokens over the object (1 = top):")
            print(shown.to_string(float_format=lambda v: f"{v:g}"))
        for key, path in paths.items():
            print(f"{key}: {path.resolve()}")
    elif name == "mine":
        from analyses.mining import mine_step

        result = mine_step(config)
        print(f"{len(result.pairs)} blind pairs among {len(result.embeddings['a'])} images")
        if not len(result.pairs):
            print(
                "no pair is more alike than --threshold-a under encoder A and less alike "
                "than --threshold-b under encoder B; the tables are written empty"
            )
        if "differs" in result.pairs:
            counts = result.pairs["differs"].str.split(";").explode().value_counts()
            print(
                "pairs whose images differ in: "
                + ", ".join(f"{k} {v}" for k, v in counts.items() if k)
            )
        for key, path in result.paths.items():
            print(f"{key}: {path.resolve()}")
    elif name == "pairs-eval":
        from analyses.mining import pairs_eval_step

        result = pairs_eval_step(config)
        shown = result.table.set_index(["condition", "pattern"])[
            ["n_pairs", "question_accuracy", "question_chance", "pair_accuracy", "pair_chance"]
        ]
        print(shown.to_string(float_format=lambda v: f"{v:.2f}"))
        for key, path in result.paths.items():
            print(f"{key}: {path.resolve()}")
    elif name == "mof":
        from analyses.mining import mof_step

        table, paths = mof_step(config)
        named = table.assign(alpha=[("" if a != a else f"{a:g}") for a in table["alpha"]])
        shown = named.pivot_table(
            index=["selection", "mode", "alpha"], columns="attribute", values="value", sort=False
        )
        print(shown.to_string(float_format=lambda v: f"{v:.2f}"))
        for key, path in paths.items():
            print(f"{key}: {path.resolve()}")
    elif name == "redundancy":
        from analyses.redundancy import redundancy_step

        table, paths = redundancy_step(config)
        spectral = table[table.attribute.fillna("") == ""]
        shown = spectral.pivot_table(
            index=["label", "condition", "site"], columns="metric", values="value", sort=False
        )
        print(shown.to_string(float_format=lambda v: f"{v:.2f}"))
        for key, path in paths.items():
            print(f"{key}: {path.resolve()}")
    elif name == "plot":
        for key, path in steps.plot_step(config).items():
            print(f"{key}: {path.resolve()}")
    else:
        print(f"report: {report.report_step(config).resolve()}")
    return 0


def _organism_train(given: dict) -> int:
    from interp.organism.build import build_organism
    from interp.organism.training import OrganismTrainConfig

    folder, metrics = build_organism(OrganismTrainConfig(**given))
    print(metrics.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"model and card: {folder.resolve()}")
    return 0


def _organism_train_ssl(given: dict) -> int:
    from analyses.encoders import build_ssl
    from interp.organism.ssl import SslTrainConfig

    folder, comparison = build_ssl(SslTrainConfig(**given))
    shown = comparison.pivot_table(index="attribute", columns="encoder", values="accuracy")
    print(shown.to_string(float_format=lambda v: f"{v:.2f}"))
    print(f"encoder and card: {folder.resolve()}")
    return 0


def _organism_finetune(given: dict) -> int:
    from interp.organism.build import finetune_organism
    from interp.organism.finetune import FinetuneConfig

    folder, metrics = finetune_organism(FinetuneConfig(**given))
    shown = metrics.drop(columns=[c for c in ("mean_error",) if c in metrics])
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"model and card: {folder.resolve()}")
    return 0


def _experiment(kind: str, given: dict) -> int:
    from analyses import experiments

    if kind == "complexity":
        paths = experiments.complexity_experiment(experiments.ComplexityExperimentConfig(**given))
    else:
        paths = experiments.encoder_experiment(experiments.EncoderExperimentConfig(**given))
    for key, path in paths.items():
        print(f"{key}: {path.resolve()}")
    return 0


def _organism_eval(given: dict) -> int:
    from interp.organism.build import OrganismEvalConfig, run_eval

    metrics = run_eval(OrganismEvalConfig(**given))
    print(metrics.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
