"""The option groups several commands share (each command declares its own options beside
its step, and combines these): sites, conditions, seed and outputs, folds, attributes,
condition sweeps, the model, own data, the images of a step on a live model, extraction,
probing, figure formats and the map's score.

Every rule a single option follows (a minimum, a set of choices) is declared with the
option and checked once for all commands (:func:`interp.options.check_options`); a
group's :meth:`check` holds only the rules that tie several options together. A command
offers only the groups whose options it uses.
"""

from __future__ import annotations

import os
import warnings
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
from interp.options import Settings, option
from interp.organism import ORGANISM_NAME
from interp.sources import ImageSet
from interp.stimuli import COMPLEXITY_LEVELS
from probes.pixels import PIXEL_INNER_FOLDS
from probes.selections import check_selection
from probes.sweep import ProbeSettings

__all__ = [
    "DEFAULT_QUESTION",
    "FAST_DEFAULTS",
    "FIGURE_FORMATS",
    "FULL_DEFAULTS",
    "SCORES",
    "check_named",
    "output_file",
]

DEFAULT_QUESTION = "Describe the image."
# What ``interp run`` uses, unless ``full``, for the settings it is not given: the
# demo's choice (the demo page: where the time goes).
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


def check_named(value: str | None, name: str, what: str) -> None:
    """A path parameter must name something: a ConfigError naming ``name`` otherwise."""
    if value is None or not str(value).strip():
        raise ConfigError(f"{name} must name {what}, got an empty string")


def output_file(out: str | os.PathLike, name: str) -> Path:
    """The one file a command writes, ``OUT/<name>``: ``out`` is a folder, as on every
    command. A path ending in ``name``'s suffix (``cache.h5``, ``probes.csv``) was the file
    itself before: it still is, for one release, with a FutureWarning."""
    out = Path(out)
    suffix = Path(name).suffix
    if out.suffix == suffix and not out.is_dir():
        warnings.warn(
            f"out={str(out)!r} names the file; out is now a folder on every command (this "
            f"one writes OUT/{name}): pass out={str(out.parent)!r}, or rename the file to "
            f"{name}; a file path will be refused in the next release",
            FutureWarning,
            stacklevel=2,
        )
        return out
    return out / name


@dataclass
class _Sites(Settings):
    sites: list[str] | None = option(
        "sites, e.g. vision.0 projector lm.3 (default: all)", default=None
    )


@dataclass
class _Conditions(Settings):
    conditions: list[str] | None = option(
        f"conditions: {'; '.join(CONDITION_SYNTAX.values())} (default: baseline shuffle "
        f"lower_mask where the model has an LLM / every condition the cache holds)",
        default=None,
    )

    def check(self) -> None:
        super().check()
        if self.conditions is not None:  # one spelling each; a malformed name says the syntax
            self.conditions = [parse_condition(c).name for c in self.conditions]


@dataclass
class _Run(Settings):
    """The seed, and how a step writes and reports."""

    seed: int = option("seed of stimuli, shuffling and folds", default=0, minimum=0)
    overwrite: bool = option("replace existing outputs", default=False)
    progress: bool = option("show progress bars", default=True)


@dataclass
class _Folds(Settings):
    """Cross-validation and intervals, shared by the attribute and pixel probes."""

    n_splits: int = option("cross-validation folds (grouped by image)", default=5, minimum=2)
    n_boot: int = option("bootstrap resamples of images for 95% intervals", default=1000, minimum=1)

    def fewest_images(self) -> int:
        """The fewest images every probe can cross-validate: the pixel probe's ``n_splits
        x PIXEL_INNER_FOLDS`` blocks (which also leaves each outer training fold enough
        images for the classifiers' inner folds)."""
        return max(2, self.n_splits * PIXEL_INNER_FOLDS, self.n_splits * ProbeSettings().n_inner)


@dataclass
class _Attributes(Settings):
    attributes: list[str] | None = option(
        "attributes to probe (default: every label: the stimuli's, or every attribute "
        "column of your images; --label-columns is the same flag, as a datasets user would "
        "name it)",
        aliases=("--label-columns",),
        default=None,
    )


@dataclass
class _ConditionSweeps(Settings):
    """Families of conditions added to the named ones, once the model's depth is known."""

    windows: int | None = option(
        "also the layer-window sweep: mask:A-B windows of this many LM layers sliding over "
        "the depth (step 1)",
        default=None,
        minimum=1,
    )
    drop_ks: list[int] | None = option(
        "also token dropping: drop:POLICY:K for each of these K (image tokens kept)",
        default=None,
    )
    drop_policies: list[str] | None = option(
        "the policies of --drop-ks: some of random on_object off_object norm (default: all)",
        default=None,
    )

    def check(self) -> None:
        super().check()
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
class _Model(Settings):
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
class _OwnData(Settings):
    """How own images are read (each command declares ``data``, ``attributes`` and
    ``n_images`` with its own help), and opening them."""

    image_column: str | None = option(
        "with a Hugging Face dataset: the column of images (default: image)", default=None
    )
    categorical: list[str] | None = option(
        "with --data: numeric-looking columns to treat as classes", default=None
    )

    def check(self) -> None:
        super().check()
        if self.categorical and self.data is None:
            raise ConfigError("categorical names columns of a label table: it needs data")

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
class _Pair(Settings):
    """A clean / corrupted pair and its question: your own two images, or built-in twin
    pairs (a stimulus and its twin that differs in what the question asks)."""

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
        "shape, whose objects' places are mirrored left-right or top-bottom, or which "
        "lacks one object (color, shape, mirror, flip or count)",
        default="color",
        choices=("color", "shape", "mirror", "flip", "count"),
    )
    seed: int = option("seed of the built-in pair", default=0, minimum=0)

    def check(self) -> None:
        super().check()
        own = {k: getattr(self, k) for k in ("clean", "corrupt", "question", "answer", "wrong")}
        if any(v is not None for v in own.values()) and not all(own.values()):
            missing = [k for k, v in own.items() if not v]
            raise ConfigError(
                f"a pair of your own needs clean, corrupt, question, answer and wrong; "
                f"missing {missing}"
            )

    def own_pair(self) -> Any:
        """Your own pair (``interp.experiments.patching.PatchPair``), its images read and
        checked; None for the built-in pairs."""
        from interp.experiments.patching import PatchPair

        if self.clean is None:
            return None
        return PatchPair(
            clean=_read_image(self.clean, "clean"),
            corrupt=_read_image(str(self.corrupt), "corrupt"),
            question=str(self.question),
            answer=str(self.answer),
            wrong=str(self.wrong),
            name=f"{Path(self.clean).name} vs {Path(str(self.corrupt)).name}",
        )

    def pairs(self, adapter: Any, n_pairs: int = 1) -> list[Any]:
        """Your own pair, or ``n_pairs`` distinct built-in twin pairs at the model's
        native size (from seeds ``seed``, ``seed + 1``, ...)."""
        from interp.organism.twins import twin_pair

        own = self.own_pair()
        if own is not None:
            return [own]
        found: dict[str, Any] = {}
        seed = self.seed
        while len(found) < n_pairs:
            pair = twin_pair(self.twin, adapter.native_image_size, seed=seed)
            found.setdefault(pair.name, pair)  # a later seed may find the same pair
            seed += 1
        return list(found.values())


def _read_image(path: str, what: str) -> Any:
    """An image file as ``(H, W, 3)`` uint8; a ConfigError naming ``what`` otherwise."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError as err:
        raise ConfigError(f"{what}: no image at {path!r}; pass an image file") from err
    except (OSError, UnidentifiedImageError) as err:
        raise ConfigError(f"{what}: {path!r} cannot be read as an image ({err})") from err


@dataclass
class _Formats(Settings):
    formats: list[str] | None = option(
        f"figure files to write: some of {' '.join(FIGURE_FORMATS)} (default: html; pdf, "
        f"svg and png need a Chrome: Debian's chromium); --format is the same flag",
        aliases=("--format",),
        default=None,
        choices=FIGURE_FORMATS,
    )


@dataclass
class _Score(Settings):
    score: str = option(
        "what the layer-by-attribute map colours: chance_normalised ((accuracy - chance) / "
        "(1 - chance)), accuracy, or selectivity (accuracy - control task)",
        default="chance_normalised",
        choices=SCORES,
    )


@dataclass
class _Images(_OwnData, _Model, _Run, _Attributes):
    """The images a step on a live model runs on (the built-in stimuli drawn, or own
    data), and its forward passes."""

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
        minimum=1,
    )
    image_size: int | None = option(
        "stimulus side in px (default: the model's native input size)", default=None, minimum=1
    )
    image_sizes: list[int] | None = option(
        "mix image sides, e.g. 32 48 64 (image i gets side i mod their count); the cache "
        "then stores each image's own tokens, ragged",
        default=None,
        minimum=1,
    )
    complexity: int | None = option(
        "draw the synthetic stimuli at complexity 1 (one object, plain) .. 5 (up to 8 small "
        "objects, clutter, noise, occlusion) (default: 1-4 objects on white, level 2)",
        default=None,
        choices=COMPLEXITY_LEVELS,
    )
    batch_size: int = option("images per forward pass", default=32, minimum=1)
    question: str = option("question put in the prompt", default=DEFAULT_QUESTION)

    def check(self) -> None:
        super().check()
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
        if self.image_sizes is not None and self.image_size is not None:
            raise ConfigError(
                f"give image_size ({self.image_size}) or image_sizes ({self.image_sizes}), not both"
            )
        if self.image_sizes == []:
            raise ConfigError(
                "image_sizes must be positive sides in px, got []; leave it out for the "
                "model's native size"
            )


@dataclass
class _ExtractOptions(_Images, _Sites, _Conditions, _ConditionSweeps):
    """Data -> model -> cache."""

    workers: int = option(
        "processes that decode and preprocess the next batches of images while the model runs",
        default=0,
        minimum=0,
    )
    store_dtype: str | None = option(
        "how activations are stored: float16 or bfloat16 (half the disk) or float32 "
        "(activations beyond float16's range) (default: the model's dtype where it is "
        "float16 or bfloat16, else float16; float32 for Gemma 3)",
        default=None,
        choices=STORE_DTYPES,
    )
    compression: str = option(
        "compress the stored activations: none, lzf (fast) or gzip (level 1, smaller)",
        default="none",
        choices=COMPRESSIONS,
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

    def keeps_pixels(self) -> bool:
        """``store_pixels``, where given; else yes for the stimuli, no for own data."""
        return self.store_pixels if self.store_pixels is not None else self.data is None


@dataclass
class _ProbeOptions(_Run, _Attributes, _Sites, _Conditions, _Folds):
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
        "most object tokens per image in the 'token' selection", default=4, minimum=1
    )

    def check(self) -> None:
        super().check()
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
