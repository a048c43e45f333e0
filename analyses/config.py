"""The settings of each step of a study, as plain dataclasses.

The same dataclasses drive the Python API and the command line (each field is an
``--option``; :mod:`interp.options`). Options shared by several steps are declared once,
in a small base class, and the steps combine them:

- :class:`ExtractConfig` (``interp extract``): data -> model -> cache.
- :class:`ProbeConfig` (``interp probe``): cache -> probe table, resumable.
- :class:`PixelConfig` (``interp pixels``): cache -> pixel-probe table and pictures.
- :class:`PlotConfig` (``interp plot``): table -> figures (HTML, PDF, SVG, PNG).
- :class:`ReportConfig` (``interp report``): a run's folder -> one HTML page.
- :class:`PatchConfig` (``interp patch``): a clean / corrupted pair -> activation
  patching on the patch grid.
- :class:`LensConfig` (``interp lens``), :class:`AttentionConfig` (``interp
  attention``): what the LM reads off the image tokens.
- :class:`AnswersConfig` (``interp answers``): data (or a cache's data) -> the model's
  answers under every condition.
- :class:`RunConfig` (``interp run``): all of them, in one output folder.

Errors name the parameters (``n_splits``); only the command line speaks of flags.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from caches.schema import COMPRESSIONS, STORE_DTYPES
from interp.conditions import (
    CONDITION_SYNTAX,
    drop_conditions,
    parse_condition,
    window_conditions,
)
from interp.errors import ConfigError
from interp.names import as_names
from interp.options import option
from interp.organism import ORGANISM_NAME
from interp.sources import ImageSet
from interp.stimuli import COMPLEXITY_LEVELS
from probes.pixels import PIXEL_INNER_FOLDS
from probes.selections import check_selection
from probes.sweep import ProbeSettings

__all__ = [
    "AnswersConfig",
    "AttentionConfig",
    "LensConfig",
    "MineConfig",
    "MofConfig",
    "PairsEvalConfig",
    "DEFAULT_QUESTION",
    "FAST_DEFAULTS",
    "FULL_DEFAULTS",
    "ExtractConfig",
    "PatchConfig",
    "PixelConfig",
    "PlotConfig",
    "RedundancyConfig",
    "ProbeConfig",
    "ReportConfig",
    "RunConfig",
    "FIGURE_FORMATS",
    "SCORES",
]

DEFAULT_QUESTION = "Describe the image."
# What ``interp run`` uses, unless ``full``, for the settings it is not given: the
# demo's choice (README, "The main job": where the time goes).
FAST_DEFAULTS: dict[str, Any] = {
    "selections": ["mean", "on_object", "token"],
    "tokens_per_image": 2,
    "n_boot": 200,
}
# What ``full`` uses for the same settings (and the staged commands by default).
FULL_DEFAULTS: dict[str, Any] = {
    "ablation_selections": ["all"],
    "tokens_per_image": 4,
    "n_boot": 1000,
}
FIGURE_FORMATS = ("html", "pdf", "svg", "png")
# What the layer-by-attribute map colours: (accuracy - chance) / (1 - chance), the probe
# accuracy itself, or accuracy minus the control task's.
SCORES = ("chance_normalised", "accuracy", "selectivity")


def _check_named(value: str, name: str, what: str) -> None:
    """A path parameter must name something: a ConfigError naming ``name`` otherwise."""
    if not str(value).strip():
        raise ConfigError(f"{name} must name {what}, got an empty string")


def _check_out(out: str, what: str = "an output folder") -> None:
    _check_named(out, "out", what)


def _names(config: Any, fields: tuple[str, ...]) -> None:
    """A single name given for a list option becomes a list of one."""
    for name in fields:
        value = as_names(getattr(config, name), name)
        setattr(config, name, None if value is None else list(value))


@dataclass
class _Common:
    """Options of every step that reads or writes activations."""

    sites: list[str] | None = option(
        "sites, e.g. vision.0 projector lm.3 (default: all)", default=None
    )
    conditions: list[str] | None = option(
        f"conditions: {'; '.join(CONDITION_SYNTAX.values())} (default: baseline shuffle "
        f"lower_mask where the model has an LLM / every condition the cache holds)",
        default=None,
    )
    seed: int = option("seed of stimuli, shuffling and folds", default=0)
    overwrite: bool = option("replace existing outputs", default=False)
    progress: bool = option("show progress bars", default=True)

    def _check_common(self) -> None:
        _names(self, ("sites", "conditions"))
        if self.conditions is not None:  # one spelling each; a malformed name says the syntax
            self.conditions = [parse_condition(c).name for c in self.conditions]
        if self.seed is not None and self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")


@dataclass
class _Folds:
    """Cross-validation and intervals, shared by the attribute and pixel probes."""

    n_splits: int = option("cross-validation folds (grouped by image)", default=5)
    n_boot: int = option("bootstrap resamples of images for 95% intervals", default=1000)

    def _check_folds(self) -> None:
        if self.n_splits < 2:
            raise ConfigError(f"n_splits must be >= 2, got {self.n_splits}")
        if self.n_boot is not None and self.n_boot < 1:
            raise ConfigError(f"n_boot must be >= 1, got {self.n_boot}")

    def fewest_images(self) -> int:
        """The fewest images every probe can cross-validate: the pixel probe's ``n_splits
        x PIXEL_INNER_FOLDS`` blocks (which also leaves each outer training fold enough
        images for the classifiers' inner folds)."""
        return max(2, self.n_splits * PIXEL_INNER_FOLDS, self.n_splits * ProbeSettings().n_inner)


@dataclass
class _Attributes:
    attributes: list[str] | None = option(
        "attributes to probe (default: every label; with --data, every attribute column; "
        "--label-columns is the same flag, as a datasets user would name it)",
        aliases=("--label-columns",),
        default=None,
    )


@dataclass
class _ConditionSweeps:
    """Families of conditions added to the named ones, once the model's depth is known."""

    windows: int | None = option(
        "also the layer-window sweep: mask:A-B windows of this many LM layers sliding over "
        "the depth (step 1)",
        default=None,
    )
    drop_ks: list[int] | None = option(
        "also token dropping: drop:POLICY:K for each of these K (image tokens kept)",
        default=None,
    )
    drop_policies: list[str] | None = option(
        "the policies of --drop-ks: some of random on_object off_object norm (default: all)",
        default=None,
    )

    def _check_sweeps(self) -> None:
        if isinstance(self.drop_ks, int):
            self.drop_ks = [self.drop_ks]
        _names(self, ("drop_policies",))
        if self.windows is not None and self.windows < 1:
            raise ConfigError(f"windows must be >= 1 LM layer, got {self.windows}")
        if self.drop_policies and not self.drop_ks:
            raise ConfigError("drop_policies choose the policies of drop_ks: give drop_ks too")
        if self.drop_ks:
            drop_conditions(self.drop_ks, self.drop_policies)  # a bad K or policy says so

    def expanded_conditions(self, conditions: list[str] | None, adapter: Any) -> list[str] | None:
        """``conditions`` (None: the model's defaults) with the windows and drops added."""
        if self.windows is None and not self.drop_ks:
            return conditions
        out = list(conditions or adapter.conditions)
        if self.windows is not None:
            out += window_conditions(adapter.n_lm_layers, self.windows)
        if self.drop_ks:
            out += drop_conditions(self.drop_ks, self.drop_policies)
        return list(dict.fromkeys(out))


@dataclass
class _Model:
    """Which model, and how it is loaded."""

    model: str = option(
        "built-in name, local save_pretrained folder, or hub id", default=ORGANISM_NAME
    )
    dtype: str | None = option(
        "float32, float16 or bfloat16 (default: the checkpoint's)", default=None
    )
    device_map: str | None = option("e.g. cuda, auto (default: CPU)", default=None)
    local_files_only: bool = option("never reach the hub", default=False)


@dataclass
class _OwnData:
    """How own images are read (each command declares ``data``, ``attributes`` and
    ``n_images`` with its own help), and opening them."""

    image_column: str | None = option(
        "with a Hugging Face dataset: the column of images (default: image)", default=None
    )
    categorical: list[str] | None = option(
        "with --data: numeric-looking columns to treat as classes", default=None
    )

    def open_data(self) -> ImageSet | None:
        """The user's data source (None for the built-in stimuli), opened and checked."""
        from interp.sources import HuggingFaceImages, open_source

        if self.data is None:
            return None
        options: dict[str, Any] = {"attributes": self.attributes, "categorical": self.categorical}
        options["n_images"] = self.n_images
        if self.image_column is not None:
            options["image_column"] = self.image_column
        if isinstance(self.data, ImageSet):
            return self.data
        if isinstance(self.data, (str, os.PathLike)):
            return open_source(self.data, **options)
        options["label_columns"] = options.pop("attributes")  # a datasets.Dataset
        return HuggingFaceImages(self.data, **options)


@dataclass
class _ExtractOptions(_OwnData, _Model, _Common, _Attributes, _ConditionSweeps):
    """Data -> model -> cache."""

    data: str | ImageSet | None = option(
        "your own images: a folder holding labels.csv, labels.jsonl or labels.parquet (or "
        "the table's path), a datasets save_to_disk folder or an imagefolder with "
        "metadata.jsonl (in Python also an ImageSet or a datasets.Dataset); default: the "
        "built-in synthetic stimuli",
        default=None,
    )
    n_images: int | None = option(
        "number of images (default: 256 synthetic ones; with --data, every row, or the first N)",
        default=None,
    )
    image_size: int | None = option(
        "stimulus side in px (default: the model's native input size)", default=None
    )
    image_sizes: list[int] | None = option(
        "mix image sides, e.g. 32 48 64 (image i gets side i mod their count); the cache "
        "then stores each image's own tokens, ragged",
        default=None,
    )
    complexity: int | None = option(
        "draw the synthetic stimuli at complexity 1 (one object, plain) .. 5 (up to 8 small "
        "objects, clutter, noise, occlusion) (default: 1-4 objects on white, level 2)",
        default=None,
    )
    batch_size: int = option("images per forward pass", default=32)
    workers: int = option(
        "processes that decode and preprocess the next batches of images while the model runs",
        default=0,
    )
    question: str = option("question put in the prompt", default=DEFAULT_QUESTION)
    store_dtype: str | None = option(
        "how activations are stored: float16 or bfloat16 (half the disk) or float32 "
        "(activations beyond float16's range) (default: the model's dtype where it is "
        "float16 or bfloat16, else float16; float32 for Gemma 3)",
        default=None,
    )
    compression: str = option(
        "compress the stored activations: none, lzf (fast) or gzip (level 1, smaller)",
        default="none",
    )
    store_pixels: bool | None = option(
        "keep the images in the cache (the pixel probe needs them) (default: yes for the "
        "synthetic stimuli, no for --data, whose images stay where they are)",
        default=None,
    )
    allow_nonfinite: bool = option(
        "store NaN/inf activations (counted per site) instead of stopping; probes still "
        "refuse them",
        default=False,
    )

    def _check_extract(self) -> None:
        self._check_common()
        self._check_sweeps()
        _names(self, ("attributes", "categorical"))
        if isinstance(self.image_sizes, int):
            self.image_sizes = [self.image_sizes]
        if self.data is not None and (self.image_size or self.image_sizes):
            raise ConfigError(
                "image_size and image_sizes draw the synthetic stimuli; with data the images "
                "keep their own sizes: leave them out"
            )
        if self.data is not None and self.complexity is not None:
            raise ConfigError(
                "complexity draws the synthetic stimuli; with data the images are yours: "
                "leave it out"
            )
        if self.complexity is not None and self.complexity not in COMPLEXITY_LEVELS:
            raise ConfigError(
                f"complexity must be one of {list(COMPLEXITY_LEVELS)}, got {self.complexity!r}"
            )
        if self.categorical and self.data is None:
            raise ConfigError("categorical names columns of a label table: it needs data")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.workers < 0:
            raise ConfigError(f"workers must be >= 0, got {self.workers}")
        if self.n_images is not None and self.n_images < 1:
            raise ConfigError(f"n_images must be >= 1, got {self.n_images}")
        if self.image_sizes is not None and self.image_size is not None:
            raise ConfigError(
                f"give image_size ({self.image_size}) or image_sizes ({self.image_sizes}), not both"
            )
        for name in ("image_size", "image_sizes"):
            given = getattr(self, name)
            sides = [given] if isinstance(given, int) else given or []
            if any(side < 1 for side in sides) or (name == "image_sizes" and given == []):
                raise ConfigError(
                    f"{name} must be positive sides in px, got {given}; leave it out for the "
                    f"model's native size"
                )
        if self.compression not in COMPRESSIONS:
            raise ConfigError(
                f"compression must be one of {', '.join(COMPRESSIONS)}, got {self.compression!r}"
            )
        if self.store_dtype is not None and self.store_dtype not in STORE_DTYPES:
            raise ConfigError(
                f"store_dtype must be one of {', '.join(STORE_DTYPES)}, got {self.store_dtype!r}"
            )

    def keeps_pixels(self) -> bool:
        """``store_pixels``, where given; else yes for the stimuli, no for own data."""
        return self.store_pixels if self.store_pixels is not None else self.data is None


@dataclass
class _ProbeOptions(_Common, _Attributes, _Folds):
    """Cache -> probe table."""

    selections: list[str] | None = option(
        "token selections: mean on_object off_object token random_<k> ... (default: all, "
        "k = 1, 8, 64, ... up to every token)",
        default=None,
    )
    ablation_selections: list[str] | None = option(
        "token selections under the ablation conditions (default: mean token; 'all' for "
        "the same as --selections)",
        default=None,
    )
    tokens_per_image: int = option(
        "most object tokens per image in the 'token' selection", default=4
    )

    def _check_probe(self) -> None:
        self._check_common()
        self._check_folds()
        _names(self, ("attributes", "selections", "ablation_selections"))
        if self.tokens_per_image is not None and self.tokens_per_image < 1:
            raise ConfigError(f"tokens_per_image must be >= 1, got {self.tokens_per_image}")
        for selection in [*(self.selections or ()), *(self.ablation_selections or ())]:
            if selection != "all":
                check_selection(selection)

    def probed_under_ablations(self) -> list[str] | None:
        """Selections under shuffle / lower_mask: ``mean`` and ``token`` unless asked
        otherwise (every selection under every condition multiplies the probing time)."""
        chosen = self.ablation_selections or ["mean", "token"]
        return None if "all" in chosen else chosen

    def probe_settings(self) -> ProbeSettings:
        return ProbeSettings(
            n_splits=self.n_splits,
            n_boot=self.n_boot,
            seed=self.seed,
            tokens_per_image=self.tokens_per_image,
        )


@dataclass
class _Figures:
    formats: list[str] | None = option(
        f"figure files to write: some of {' '.join(FIGURE_FORMATS)} (default: html; pdf, "
        f"svg and png need a Chrome: Debian's chromium); --format is the same flag",
        aliases=("--format",),
        default=None,
    )
    score: str = option(
        "what the layer-by-attribute map colours: chance_normalised ((accuracy - chance) / "
        "(1 - chance)), accuracy, or selectivity (accuracy - control task)",
        default="chance_normalised",
    )

    def _check_figures(self) -> None:
        _names(self, ("formats",))
        unknown = [f for f in self.formats or () if f not in FIGURE_FORMATS]
        if unknown:
            raise ConfigError(
                f"formats {unknown} are not figure formats; choose from {FIGURE_FORMATS}"
            )
        if self.score not in SCORES:
            raise ConfigError(f"score must be one of {SCORES}, got {self.score!r}")


@dataclass
class ExtractConfig(_ExtractOptions):
    """``interp extract``: the activations of the images at the sites, into ``out``."""

    out: str = option("the cache file to write (HDF5)", default="cache.h5")

    def __post_init__(self) -> None:
        _check_out(self.out, "a cache file")
        self._check_extract()


@dataclass
class ProbeConfig(_ProbeOptions):
    """``interp probe``: every site x condition x selection x attribute of ``cache``,
    into the table ``out``; never writes to the cache."""

    cache: str = option("the cache to probe", default="", positional=True)
    out: str = option("the probe table to write (CSV)", default="probes.csv")

    def __post_init__(self) -> None:
        _check_named(self.cache, "cache", "a cache file (interp extract writes one)")
        self._check_probe()


@dataclass
class PixelConfig(_Common, _Folds):
    """``interp pixels``: the pixel-value probe of every site of ``cache``: its table and
    the picture grid of held-out reconstructions, into the folder ``out``."""

    cache: str = option("the cache to probe", default="", positional=True)
    out: str = option("output folder", default="pixels")

    def __post_init__(self) -> None:
        _check_named(self.cache, "cache", "a cache file (interp extract writes one)")
        self._check_common()
        self._check_folds()


@dataclass
class PlotConfig(_Figures):
    """``interp plot``: every figure each table supports, into the folder ``out``."""

    tables: list[str] | None = option(
        "probe tables (probes.csv) and pixel tables (pixel_reconstruction.csv)",
        default=None,
        positional=True,
    )
    out: str = option("output folder", default="figures")
    selection: str | None = option(
        "the token selection the layer map shows (default: the most informative the table "
        "has: token, else on_object, else mean)",
        default=None,
    )
    overwrite: bool = option("replace existing figures", default=False)

    def __post_init__(self) -> None:
        _names(self, ("tables",))
        if not self.tables:
            raise ConfigError("tables must name a probe table (interp probe writes one)")
        self._check_figures()


@dataclass
class ReportConfig:
    """``interp report``: one self-contained HTML page of a run's folder."""

    run: str = option("a run's output folder", default="", positional=True)
    out: str | None = option("the page to write (default: RUN/report.html)", default=None)

    def __post_init__(self) -> None:
        if not str(self.run).strip():
            raise ConfigError("run must name a run's output folder (interp run writes one)")


@dataclass
class AnswersConfig(_ExtractOptions):
    """``interp answers``: the model's answers to the questions of the data (the built-in
    stimuli's question types, or a label table's question / answer columns), under every
    condition, into the folder ``out`` (``answers.csv``: per condition and question type;
    ``answer_rows.csv``: per question)."""

    source: str | None = option(
        "a cache (its model and images are used again) or your own data (as --data); "
        "default: --data, or the built-in stimuli",
        default=None,
        positional=True,
    )
    model: str | None = option(
        "built-in name, local save_pretrained folder, or hub id (default: the cache's "
        "model, else the built-in one)",
        default=None,
    )
    n_boot: int = option("bootstrap resamples of images for 95% intervals", default=1000)
    seed: int | None = option(
        "seed of stimuli, shuffling and the bootstrap (default: a cache's own, else 0)",
        default=None,
    )
    out: str = option("output folder", default="answers")

    def __post_init__(self) -> None:
        _check_out(self.out)
        if self.source is not None and self.data is not None:
            raise ConfigError(
                f"give the images once: source ({self.source!r}) or data ({self.data!r})"
            )
        if self.n_boot < 1:
            raise ConfigError(f"n_boot must be >= 1, got {self.n_boot}")
        if self.n_images is not None and self.n_images < 2:
            raise ConfigError(
                f"n_images must be >= 2: an accuracy over {self.n_images} image has no "
                f"interval and its questions no wrong options to tell chance from"
            )
        self._check_extract()


@dataclass
class LensConfig(_ExtractOptions):
    """``interp lens``: the logit lens on the image tokens over each image's first
    object, per LM depth and categorical attribute, into the folder ``out``."""

    out: str = option("output folder", default="lens")

    def __post_init__(self) -> None:
        _check_out(self.out)
        self._check_extract()
        given = [k for k in ("conditions", "windows", "drop_ks") if getattr(self, k)]
        if given:
            raise ConfigError(
                f"the logit lens reads the model as it is (the baseline), so these settings "
                f"would change nothing: leave out {' '.join(f'{k}=' for k in given)}"
            )


@dataclass
class AttentionConfig(_ExtractOptions):
    """``interp attention``: attention from the answer position (or ``query``) to each
    patch token, per LM layer and head, under each condition, into the folder ``out``
    (the model is loaded with eager attention: only it forms the weights)."""

    conditions: list[str] | None = option(
        f"conditions: {'; '.join(CONDITION_SYNTAX.values())} (default: baseline)", default=None
    )
    layers: list[int] | None = option("LM layers (default: all)", default=None)
    query: int | None = option(
        "the text position attending: an index into the prompt's tokens, negative from its "
        "end (default: its last token, where the answer is read)",
        default=None,
    )
    out: str = option("output folder", default="attention")

    def __post_init__(self) -> None:
        _check_out(self.out)
        if isinstance(self.layers, int):
            self.layers = [self.layers]
        if self.n_images is None and self.data is None:
            self.n_images = 16  # a table per token, layer and head: a few images suffice
        self._check_extract()
        if self.sites:
            layers = [int(s.removeprefix("lm.")) for s in self.sites if s.startswith("lm.")]
            raise ConfigError(
                f"attention is read per LM layer, not per site: leave sites out and pass "
                f"layers={' '.join(map(str, layers or [0]))}"
            )


PATCH_METHODS = ("exact", "attribution", "both")


@dataclass
class PatchConfig(_Model, _Figures):
    """``interp patch``: activation patching of a clean / corrupted pair on the patch
    grid, into the folder ``out`` (``patching.csv``, the map, the pair's picture)."""

    clean: str | None = option(
        "the clean image (a file); with --corrupt, --question, --answer and --wrong "
        "(default: a built-in twin pair, --twin)",
        default=None,
    )
    corrupt: str | None = option("the corrupted image (a file of the same size)", default=None)
    question: str | None = option("the question put to both images", default=None)
    answer: str | None = option("the clean image's answer", default=None)
    wrong: str | None = option("the corrupted image's answer", default=None)
    twin: str = option(
        "the built-in pair: a stimulus and its twin whose one object changes color or "
        "shape, or which is mirrored (color, shape or mirror)",
        default="color",
    )
    seed: int = option("seed of the built-in pair", default=0)
    sites: list[str] | None = option(
        "sites to patch (default: the projector and every LM layer)", default=None
    )
    method: str = option(
        "exact (a forward pass per token), attribution (one backward pass, first order) or both",
        default="both",
    )
    batch_size: int = option("patched copies per forward pass", default=64)
    out: str = option("output folder", default="patching")
    overwrite: bool = option("replace existing outputs", default=False)
    progress: bool = option("show progress bars (loading the model)", default=True)

    def __post_init__(self) -> None:
        _check_out(self.out)
        _names(self, ("sites",))
        self._check_figures()
        own = {k: getattr(self, k) for k in ("clean", "corrupt", "question", "answer", "wrong")}
        if any(v is not None for v in own.values()) and not all(own.values()):
            missing = [k for k, v in own.items() if not v]
            raise ConfigError(
                f"a pair of your own needs clean, corrupt, question, answer and wrong; "
                f"missing {missing}"
            )
        if self.twin not in ("color", "shape", "mirror"):
            raise ConfigError(f"twin must be color, shape or mirror, got {self.twin!r}")
        if self.method not in PATCH_METHODS:
            raise ConfigError(f"method must be one of {PATCH_METHODS}, got {self.method!r}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass
class RunConfig(_ExtractOptions, _ProbeOptions, _Figures):
    """Everything ``interp run`` does: extract, probe, pixels, plot and report, into one
    output folder; the command line's options are these fields."""

    out: str = option("output folder", default="interp-results")
    full: bool = option(
        "the exhaustive study: every selection under every condition, 4 tokens per image, "
        "1000 bootstrap resamples (default: the demo's fast choice for what is not given: "
        "mean, on_object and token selections, 2 tokens per image, 200 resamples)",
        default=False,
    )
    n_boot: int | None = option(
        "bootstrap resamples of images for 95% intervals (default: 1000 with --full, else 200)",
        default=None,
    )
    tokens_per_image: int | None = option(
        "most object tokens per image in the 'token' selection (default: 4 with --full, else 2)",
        default=None,
    )

    def __post_init__(self) -> None:
        _check_out(self.out)
        self._check_extract()
        self._check_probe()
        self._check_figures()
        if self.n_images is not None:
            self.check_image_count(self.n_images)

    def resolved(self) -> RunConfig:
        """This run with its defaults filled in: with ``full``, every selection under
        every condition and 1000 bootstrap resamples; else :data:`FAST_DEFAULTS` for each
        of those not given (``make demo`` in minutes, still showing the findings)."""
        chosen = FULL_DEFAULTS if self.full else FAST_DEFAULTS
        return self.replace(**{k: v for k, v in chosen.items() if getattr(self, k) is None})

    def check_image_count(self, n_images: int) -> None:
        """Enough images for every probe's folds (a ConfigError that says how many)."""
        fewest = self.fewest_images()
        if n_images < fewest:
            raise ConfigError(
                f"n_images={n_images} is too few for {self.n_splits}-fold probes: the "
                f"pixel probe splits the images into {self.n_splits} x {PIXEL_INNER_FOLDS} "
                f"folds; use at least {fewest} images, or fewer folds (n_splits)"
            )

    def open_data(self) -> ImageSet | None:
        data = super().open_data()
        if data is not None:
            self.check_image_count(len(data))
        return data

    def step(self, cls: type, **changes: Any) -> Any:
        """The settings of one step (``ExtractConfig``, ``ProbeConfig``, ...): this run's
        values of the fields it has, and ``changes``."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {name: getattr(self, name) for name in names if hasattr(self, name)}
        return cls(**{**values, **changes})

    def paths(self) -> dict[str, Path]:
        from analyses.files import OUTPUT_FILES

        return {key: Path(self.out) / name for key, name in OUTPUT_FILES.items()}

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)


EMBEDDING_KINDS = ("image", "mean")


@dataclass
class MineConfig(_OwnData):
    """``interp mine``: blind pairs (MMVP): images that ``encoder_a`` embeds almost alike
    (cosine above ``threshold_a``) while ``encoder_b`` tells them apart (below
    ``threshold_b``), into the folder ``out``."""

    encoder_b: str | None = option(
        "the encoder that tells images apart (e.g. a DINOv2): built-in name, save_pretrained "
        "folder, or hub id (default: organism-ssl, the organism's world's self-supervised "
        "encoder)",
        default="organism-ssl",
    )
    encoder_a: str = option(
        "the encoder whose embedding is tested (e.g. a CLIP; a LLaVA-1.5's tower): built-in "
        "name, save_pretrained folder, or hub id",
        default=ORGANISM_NAME,
    )
    threshold_a: float = option("pairs more alike than this under encoder_a", default=0.95)
    threshold_b: float = option("and less alike than this under encoder_b", default=0.6)
    embedding: str = option(
        "image: each checkpoint's own image embedding (CLIP's projected or pooled output, "
        "SigLIP's pooled head, DINOv2's normed CLS); mean: the mean patch token",
        default="image",
    )
    data: str | ImageSet | None = option(
        "your own images (as for extract); default: the built-in synthetic stimuli",
        default=None,
    )
    attributes: list[str] | None = option(
        "labels compared within each pair (default: every label)", default=None
    )
    n_images: int | None = option(
        "number of images (default: 1000 synthetic ones; with --data, every row, or the first N)",
        default=None,
    )
    image_size: int | None = option(
        "stimulus side in px (default: encoder_a's native input size)", default=None
    )
    seed: int = option("seed of the stimuli", default=0)
    batch_size: int = option("images per forward pass", default=64)
    top: int = option("pairs shown in the picture of the top pairs", default=12)
    dtype: str | None = option(
        "float32, float16 or bfloat16 (default: the checkpoint's)", default=None
    )
    device_map: str | None = option("e.g. cuda (default: CPU)", default=None)
    local_files_only: bool = option("never reach the hub", default=False)
    out: str = option("output folder", default="mine")
    overwrite: bool = option("replace existing outputs", default=False)
    progress: bool = option("show progress bars", default=True)

    def __post_init__(self) -> None:
        _check_out(self.out)
        _names(self, ("attributes", "categorical"))
        if self.encoder_b is None:
            raise ConfigError(
                "encoder_b is required: the encoder that tells images apart, e.g. "
                "facebook/dinov2-large or a save_pretrained folder of one"
            )
        if self.embedding not in EMBEDDING_KINDS:
            raise ConfigError(
                f"embedding must be one of {', '.join(EMBEDDING_KINDS)}, got {self.embedding!r}"
            )
        for name in ("threshold_a", "threshold_b"):
            if not -1 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name} is a cosine in [-1, 1], got {getattr(self, name)}")
        for name in ("batch_size", "top"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_images is not None and self.n_images < 2:
            raise ConfigError(f"n_images must be >= 2 (pairs), got {self.n_images}")
        if self.data is not None and self.image_size is not None:
            raise ConfigError("image_size draws the synthetic stimuli; with data leave it out")


@dataclass
class PairsEvalConfig(_OwnData, _Model):
    """``interp pairs-eval``: questions about both images of each pair, answered by
    ``model``; per-question and pair accuracy (both right) per visual pattern, into the
    folder ``out``."""

    pairs: str | None = option(
        "a pairs.csv (columns i, j; optional pattern), e.g. from interp mine; default: the "
        "pairs the data defines (MMVP)",
        default=None,
    )
    data: str | ImageSet | None = option(
        "the images: MMVP's folder (Questions.csv and 'MMVP Images/'), your own images with "
        "question and answer columns, or (default) the stimuli the pairs were mined from",
        default=None,
    )
    n_images: int | None = option("with --data: only the first N images", default=None)
    conditions: list[str] | None = option(
        "conditions answered under (default: baseline)", default=None
    )
    batch_size: int = option("images per forward pass", default=32)
    n_boot: int = option("bootstrap resamples of the pairs for the intervals", default=1000)
    seed: int = option("seed of the bootstrap", default=0)
    out: str = option("output folder", default="pairs-eval")
    overwrite: bool = option("replace existing outputs", default=False)
    progress: bool = option("show progress bars", default=True)
    attributes: list[str] | None = option(
        "with --data: the label columns kept (default: every one)", default=None
    )

    def __post_init__(self) -> None:
        _check_out(self.out)
        _names(self, ("conditions", "categorical"))
        if self.pairs is None and self.data is None:
            raise ConfigError(
                "give pairs (a pairs.csv, e.g. from interp mine) or data that pairs its "
                "images (MMVP's folder)"
            )
        for name in ("batch_size", "n_boot"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class MofConfig:
    """``interp mof``: Mixture-of-Features probes of two encoders' caches of the same
    images (additive for each alpha, and interleaved), into the folder ``out``."""

    caches: list[str] | None = option(
        "two caches of the same images: encoder A's, then encoder B's",
        default=None,
        positional=True,
    )
    site_a: str | None = option("encoder A's site (default: its last)", default=None)
    site_b: str | None = option("encoder B's site (default: its last)", default=None)
    attributes: list[str] | None = option(
        "categorical labels probed (default: every one)", default=None
    )
    selections: list[str] | None = option(
        "samples: each image's tokens pooled within each encoder's own tokens (mean, "
        "on_object, off_object), or token (A's tokens over the first object, each beside "
        "B's nearest token: B's grid resampled onto A's) (default: mean)",
        default=None,
    )
    alphas: list[float] | None = option(
        "weights of encoder A in the additive mixture (default: 0 0.25 0.5 0.75 1)",
        default=None,
    )
    n_splits: int = option("outer folds (grouped by image)", default=5)
    n_boot: int = option("bootstrap resamples of the images for the intervals", default=1000)
    seed: int = option("seed of the folds and the bootstrap", default=0)
    out: str = option("output folder", default="mof")
    formats: list[str] | None = option(
        f"figure files to write: some of {' '.join(FIGURE_FORMATS)} (default: html)",
        default=None,
    )
    overwrite: bool = option("replace existing outputs", default=False)

    def __post_init__(self) -> None:
        _check_out(self.out)
        given = [self.caches] if isinstance(self.caches, str) else list(self.caches or ())
        if len(given) == 2 and given[0] == given[1]:
            raise ConfigError(
                f"caches names {given[0]!r} twice; give two caches of the same images: "
                f"encoder A's, then encoder B's"
            )
        _names(self, ("caches", "attributes", "selections", "formats"))
        if not self.caches or len(self.caches) != 2:
            raise ConfigError(
                f"caches must name two caches of the same images (encoder A's, then B's), "
                f"got {self.caches}"
            )
        self.selections = self.selections or ["mean"]
        self.alphas = [float(a) for a in (self.alphas or (0.0, 0.25, 0.5, 0.75, 1.0))]
        if any(not 0 <= a <= 1 for a in self.alphas):
            raise ConfigError(f"alphas must lie in [0, 1], got {self.alphas}")
        self.formats = self.formats or ["html"]
        unknown = [f for f in self.formats if f not in FIGURE_FORMATS]
        if unknown:
            raise ConfigError(f"formats must be among {FIGURE_FORMATS}, got {unknown}")
        if self.n_splits < 2 or self.n_boot < 1:
            raise ConfigError(
                f"n_splits must be >= 2 and n_boot >= 1, got {self.n_splits} and {self.n_boot}"
            )


@dataclass
class RedundancyConfig:
    """``interp redundancy``: how redundantly each site spreads the image over its
    tokens, per cache (several overlaid: models or checkpoints), into the folder ``out``."""

    caches: list[str] | None = option(
        "one or more caches (each a model or checkpoint, overlaid in the figure)",
        default=None,
        positional=True,
    )
    probes: list[str] | None = option(
        "probe tables (probes.csv, one per cache, in order) for k90 and spread (optional)",
        default=None,
    )
    answers: list[str] | None = option(
        "answers tables (answers.csv, one per cache, in order) with drop:POLICY:K "
        "conditions: their token-dropping curves (optional)",
        default=None,
    )
    labels: list[str] | None = option(
        "a name per cache in the table and figure (default: each file's folder and name)",
        default=None,
    )
    sites: list[str] | None = option("sites (default: all)", default=None)
    conditions: list[str] | None = option("conditions (default: every one)", default=None)
    n_boot: int = option("bootstrap resamples of the images for the intervals", default=1000)
    seed: int = option("seed of the bootstrap", default=0)
    out: str = option("output folder", default="redundancy")
    formats: list[str] | None = option(
        f"figure files to write: some of {' '.join(FIGURE_FORMATS)} (default: html)",
        default=None,
    )
    overwrite: bool = option("replace existing outputs", default=False)

    def __post_init__(self) -> None:
        _check_out(self.out)
        _names(self, ("caches", "probes", "answers", "labels", "sites", "conditions", "formats"))
        if not self.caches:
            raise ConfigError("caches must name at least one cache (interp extract writes one)")
        for name in ("probes", "answers", "labels"):
            given = getattr(self, name)
            if given is not None and len(given) != len(self.caches):
                raise ConfigError(
                    f"{name} must give one per cache ({len(self.caches)}), got {len(given)}"
                )
        self.formats = self.formats or ["html"]
        unknown = [f for f in self.formats if f not in FIGURE_FORMATS]
        if unknown:
            raise ConfigError(f"formats must be among {FIGURE_FORMATS}, got {unknown}")
        if self.n_boot < 1:
            raise ConfigError(f"n_boot must be >= 1, got {self.n_boot}")
