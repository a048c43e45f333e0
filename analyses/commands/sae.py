"""``interp sae train``: sparse autoencoders of a cache's sites, in SAELens's format."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analyses.commands.command import Command, StepResult
from analyses.commands.options import _Run, _Sites, check_named
from analyses.files import FEATURE_FILES, FEATURE_PAGE_FILES, SAE_FILES
from analyses.outputs import check_output_folder, check_writable, write_table
from analyses.provenance import cache_origin, check_same_origin, settings_path
from interp.conditions import parse_condition
from interp.errors import ConfigError, SiteError
from interp.models.sae import ARCHITECTURES
from interp.options import option

__all__ = [
    "SaeFeaturesConfig",
    "SaePagesConfig",
    "SaeTrainConfig",
    "sae_features_step",
    "sae_pages_step",
    "sae_train_step",
    "COMMANDS",
]


@dataclass
class SaeTrainConfig(_Run, _Sites):
    """``interp sae train``: an SAE per site and per architecture x expansion x k, from
    one read of each site's tokens, into the folder ``out``."""

    cache: str = option("the cache whose tokens are encoded", default="", positional=True)
    conditions: list[str] | None = option(
        "conditions whose tokens are read, an SAE each (default: baseline); other than the "
        "baseline's, they go into OUT/<condition>/",
        default=None,
    )
    architectures: list[str] | None = option(
        "topk, batchtopk (JumpReLU at inference) and/or relu (L1 penalty) (default: topk)",
        default=None,
        choices=ARCHITECTURES,
    )
    expansions: list[int] | None = option(
        "dictionary sizes as multiples of the site's width (default: 8)", default=None, minimum=1
    )
    ks: list[int] | None = option(
        "features kept per token by topk and batchtopk (default: 16)", default=None, minimum=1
    )
    l1: float = option("the L1 weight of relu SAEs", default=1.0, minimum=0)
    epochs: int = option("passes over the training images", default=1, minimum=1)
    batch_size: int = option("tokens per training step", default=512, minimum=1)
    lr: float = option("Adam's learning rate", default=1e-3)
    buffer_tokens: int = option(
        "tokens read ahead and shuffled together (the memory the stream holds)",
        default=16384,
        minimum=1,
    )
    held_out: float = option(
        "share of the images (the last ones) kept out of training and measured",
        default=0.1,
        minimum=0.01,
        maximum=0.9,
    )
    device_map: str | None = option(
        "where training runs: cpu or cuda (default: cuda where there is one)", default=None
    )
    out: str = option(
        "output folder: OUT/<site>/<sae>/ (cfg.json, sae_weights.safetensors), "
        "OUT/<site>/training_log.csv and OUT/sae_metrics.csv",
        default="saes",
    )

    def check(self) -> None:
        super().check()
        check_named(self.cache, "cache", "a cache file (interp extract writes one)")
        check_named(self.out, "out", "an output folder")
        self.conditions = [parse_condition(c).name for c in self.conditions or ["baseline"]]

    def specs(self) -> list:
        """Every SAE to train: architecture x expansion x k (relu takes no k)."""
        from probes.sae_training import SaeSpec

        found = []
        for arch, expansion, k in itertools.product(
            self.architectures or ["topk"], self.expansions or [8], self.ks or [16]
        ):
            spec = SaeSpec(arch, expansion, k if arch != "relu" else 16, self.l1)
            if spec not in found:
                found.append(spec)
        return found


def sae_train_step(config: SaeTrainConfig) -> StepResult:
    """Train the SAEs of every site (each site one read of the cache), write them, their
    logs and ``sae_metrics.csv`` (held-out fraction of variance unexplained, L0, dead
    and dense features per SAE)."""
    from caches import CacheReader
    from interp.models.loading import check_device_map
    from probes.sae_training import SaeTraining, train_saes

    check_device_map(config.device_map)
    folder = check_output_folder(config.out)
    paths = {key: folder / name for key, name in SAE_FILES.items()}
    check_writable(paths.values(), config.overwrite)
    training = SaeTraining(
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        buffer_tokens=config.buffer_tokens,
        held_out=config.held_out,
        seed=config.seed,
    )
    tables = []
    with CacheReader(config.cache) as reader:
        origin = cache_origin(reader.attrs, reader.n_written)
        sites = config.sites or reader.sites
        unknown = [site for site in sites if site not in reader.sites]
        if unknown:
            raise SiteError(f"sites {unknown} are not in the cache; its sites: {reader.sites}")
        missing = [c for c in config.conditions if c not in reader.conditions]
        if missing:
            raise ConfigError(
                f"conditions {missing} are not in the cache; its conditions: {reader.conditions}"
            )
        for condition, site in itertools.product(config.conditions, sites):
            where = folder if condition == "baseline" else folder / condition
            tables.append(
                train_saes(
                    reader,
                    site,
                    config.specs(),
                    where,
                    condition=condition,
                    training=training,
                    device=config.device_map,
                    progress=config.progress,
                )  # fmt: skip
            )
    table = pd.concat(tables, ignore_index=True)
    if table.empty:  # a rank of torchrun other than 0: rank 0 writes what they all trained
        return StepResult(summary="trained with the other ranks; rank 0 writes the SAEs")
    write_table(table, paths["sae_metrics"])
    _record(
        paths["sae_metrics"], origin, cache=config.cache, specs=[s.name for s in config.specs()]
    )
    index = (
        ["site", "sae"] if set(table.condition) == {"baseline"} else ["condition", "site", "sae"]
    )
    shown = table.set_index(index)[["fvu", "l0", "dead", "dense"]]
    return StepResult(
        summary=f"{len(table)} SAEs at {len(sites)} sites, measured on held-out images:",
        paths={**paths, **_sae_paths(folder, table)},
        tables={"sae_metrics": table},
        shown=shown.to_string(float_format=lambda v: f"{v:.3f}"),
    )


def _record(table: Path, origin: dict | None, **made: object) -> None:
    """What ``table`` was made from, beside it (``<table>.settings.json``)."""
    import json

    from analyses.outputs import write_atomic

    text = json.dumps({"origin": origin, **made}, default=str)
    write_atomic(settings_path(table), lambda tmp: tmp.write_text(text))


def _check_from_one_of(table: str, origins: dict[str, dict]) -> None:
    """A ConfigError unless the table comes from one of the caches of ``origins``."""
    import warnings

    refusals = []
    for origin in origins.values():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # a table that cannot say is refused too
                check_same_origin(table, origin)
            return
        except (ConfigError, UserWarning) as err:
            refusals.append(str(err))
    raise ConfigError(
        f"probes: {table!r} is not a probe table of the SAEs' caches ({'; '.join(refusals)})"
    )


def _sae_paths(folder: Path, table: pd.DataFrame) -> dict[str, Path]:
    """Each SAE's folder, by ``[condition/]site/name``."""
    found = {}
    for condition, site, name in table[["condition", "site", "sae"]].values:
        where = folder if condition == "baseline" else folder / condition
        key = f"{site}/{name}" if condition == "baseline" else f"{condition}/{site}/{name}"
        found[key] = where / site / name
    return found


@dataclass
class SaeFeaturesConfig(_Run):
    """``interp sae features``: each feature of the SAEs against the attributes of the
    tokens' objects, on the cache's images (by default each SAE's held-out ones)."""

    saes: list[str] | None = option(
        "SAE folders (interp sae train writes OUT/<site>/<sae>/)", default=None, positional=True
    )
    cache: str | None = option("the cache the SAEs were trained on (default: theirs)", default=None)
    attributes: list[str] | None = option(
        "per-object attributes (default: every one the cache holds)", default=None
    )
    probes: list[str] | None = option(
        "probe tables of the same caches (probes.csv): each attribute's probe score (the "
        "token selection's accuracy, under the SAE's condition) beside its count of "
        "specific features",
        default=None,
    )
    model: str | None = option(
        "the model of the cache (built-in name, folder or hub id): for SAEs of LM sites, "
        "the words each feature's decoder direction promotes through the logit lens "
        "(OUT/feature_words.csv)",
        default=None,
    )
    threshold: float = option(
        "the AUROC that makes a feature specific to an attribute",
        default=0.9,
        minimum=0.5,
        maximum=1,
    )
    out: str = option(
        "output folder: OUT/features.csv and OUT/feature_counts.csv", default="features"
    )

    def check(self) -> None:
        super().check()
        if not self.saes:
            raise ConfigError(
                "saes must name at least one SAE folder (interp sae train writes them)"
            )
        check_named(self.out, "out", "an output folder")


def sae_features_step(config: SaeFeaturesConfig) -> StepResult:
    """Every feature's best class per attribute (AUROC, precision at its top activations,
    frequency) in ``features.csv``; per site, SAE and attribute the features specific to
    it in ``feature_counts.csv`` (with the probe's accuracy where a probe table is given);
    with ``model``, each LM-site feature's words in ``feature_words.csv``."""
    from caches import CacheReader
    from interp.models.sae import load_sae
    from probes.sae_features import feature_table, specific_counts

    folder = check_output_folder(config.out)
    paths = {key: folder / name for key, name in FEATURE_FILES.items()}
    if config.model:
        paths["feature_words"] = folder / "feature_words.csv"
    check_writable(paths.values(), config.overwrite)
    loaded = {path: load_sae(path) for path in config.saes}
    where = {}  # each SAE's cache and site, and each cache's origin, before any work
    origins = {}
    for path, sae in loaded.items():
        cache = config.cache or sae.metadata.get("cache")
        site = sae.metadata.get("hook_name")
        if not cache or not site:
            raise ConfigError(
                f"{path!r} does not say which cache and site it was trained on; pass cache"
            )
        where[path] = (str(cache), str(site))
        if str(cache) not in origins:
            with CacheReader(cache) as reader:
                origins[str(cache)] = cache_origin(reader.attrs, reader.n_written)
    for table_path in config.probes or ():  # each probe table of one of the SAEs' caches
        _check_from_one_of(table_path, origins)
    tables = []
    for path, sae in loaded.items():
        cache, site = where[path]
        own = config.cache in (None, sae.metadata.get("cache"))  # its held-out images
        with CacheReader(cache) as reader:
            tables.append(
                feature_table(
                    sae,
                    reader,
                    site,
                    name=Path(path).name,
                    images=None if own else range(reader.n_written),
                    condition=str(sae.metadata.get("condition", "baseline")),
                    attributes=config.attributes,
                )  # fmt: skip
            )
    table = pd.concat(tables, ignore_index=True)
    counts = specific_counts(table, config.threshold)
    if config.probes:
        from analyses.commands.tables import read_table

        probes = pd.concat([read_table(path, "probes") for path in config.probes])
        conditions = {str(sae.metadata.get("condition", "baseline")) for sae in loaded.values()}
        accuracy = (
            probes[probes.condition.isin(conditions) & (probes.selection == "token")]
            .groupby(["site", "attribute"])["value"]
            .first()
            .rename("probe_value")  # accuracy, or R² for a numeric attribute
        )
        counts = counts.join(accuracy, on=["site", "attribute"])
    words = _feature_words(config.model, loaded) if config.model else None
    if words is not None:
        write_table(words, paths["feature_words"])
    write_table(table, paths["features"])
    write_table(counts, paths["feature_counts"])
    made = {"saes": list(config.saes), "threshold": config.threshold, "probes": config.probes}
    single = next(iter(origins.values())) if len(origins) == 1 else None
    for path in paths.values():
        _record(path, single, caches=list(origins), **made)
    return StepResult(
        summary=f"{len(table[['site', 'sae', 'feature']].drop_duplicates())} features of "
        f"{len(loaded)} SAEs against "
        f"{table.attribute.nunique()} attributes; specific (AUROC >= {config.threshold:g}):",
        paths=paths,
        tables={"features": table, "feature_counts": counts}
        | ({"feature_words": words} if words is not None else {}),
        shown=counts.to_string(index=False, float_format=lambda v: f"{v:.2f}"),
    )


@dataclass
class SaePagesConfig(_Run):
    """``interp sae pages``: a page of features of one SAE: their top-activating patches
    outlined in the images, histograms, best attributes and words."""

    sae: str = option("an SAE folder (interp sae train writes them)", default="", positional=True)
    cache: str | None = option(
        "a cache of the SAE's site with stored images (default: the SAE's own)", default=None
    )
    features: list[int] | None = option(
        "the features shown (default: the most specific ones of --table, else the most frequent)",
        default=None,
        minimum=0,
    )
    table: str | None = option(
        "features.csv of interp sae features: each feature's best attributes", default=None
    )
    words: str | None = option("feature_words.csv of interp sae features", default=None)
    n_features: int = option("how many features, when not named", default=16, minimum=1)
    n_top: int = option("top-activating patches per feature", default=8, minimum=1)
    out: str = option(
        "output folder: OUT/feature_pages.html and OUT/feature_grid.png", default="feature-pages"
    )

    def check(self) -> None:
        super().check()
        check_named(self.sae, "sae", "an SAE folder (interp sae train writes them)")
        check_named(self.out, "out", "an output folder")


def sae_pages_step(config: SaePagesConfig) -> StepResult:
    """The chosen features' grid (PNG) and page (HTML)."""
    from analyses.commands.tables import read_table
    from analyses.feature_pages import feature_grid, feature_page, feature_views
    from analyses.outputs import write_atomic, write_picture
    from caches import CacheReader
    from interp.models.sae import load_sae

    folder = check_output_folder(config.out)
    paths = {key: folder / name for key, name in FEATURE_PAGE_FILES.items()}
    check_writable(paths.values(), config.overwrite)
    sae = load_sae(config.sae)
    site = str(sae.metadata.get("hook_name") or "")
    condition = str(sae.metadata.get("condition", "baseline"))  # the tokens it was trained on
    cache = config.cache or sae.metadata.get("cache")
    if not cache or not site:
        raise ConfigError(f"{config.sae!r} does not say which cache and site it was trained on")
    table = read_table(config.table, "table") if config.table else None
    words = read_table(config.words, "words") if config.words else None
    if table is not None:
        table = table[table.sae == Path(config.sae).name]
    with CacheReader(cache) as reader:
        chosen = config.features
        if not chosen and table is not None and len(table):
            best = table[table.frequency > 0].sort_values("auroc", ascending=False)
            chosen = list(dict.fromkeys(best.feature))[: config.n_features]
        if not chosen:
            chosen = _most_frequent(sae, reader, site, condition, config.n_features)
        views = feature_views(sae, reader, site, chosen, n_top=config.n_top, condition=condition)
    labels = {}
    if table is not None:
        for feature, rows in table.groupby("feature"):
            top = rows.sort_values("auroc", ascending=False).iloc[0]
            labels[int(feature)] = f"{top['attribute']} {top['class']}\nAUROC {top['auroc']:.2f}"
    write_picture(feature_grid(views, labels), paths["grid"])
    about = {"folder": config.sae, "site": site, "cache": cache, "features": sae.d_sae}
    html = feature_page(
        views, title=f"features of {Path(config.sae).name} at {site}", about=about,
        table=table, words=words,
    )  # fmt: skip
    write_atomic(paths["page"], lambda tmp: tmp.write_text(html, encoding="utf-8"))
    return StepResult(
        summary=f"{len(views)} features of {Path(config.sae).name} at {site}",
        paths=paths,
        extras={"views": views},
    )


def _most_frequent(sae, reader, site: str, condition: str, n: int) -> list[int]:
    """The ``n`` features firing on the most tokens of the SAE's held-out images."""
    import torch

    from probes.sae_training import encoded_blocks

    held = sae.metadata.get("held_out_images")
    images = range(*held) if held else range(reader.n_written)
    counts = torch.zeros(sae.d_sae)
    for _, features in encoded_blocks(sae, reader, site, condition, images):
        counts += (features > 0).sum(0)
    return [int(j) for j in torch.argsort(counts, descending=True)[:n]]


def _feature_words(model: str, saes: dict) -> pd.DataFrame:
    """Per feature of each SAE of an LM site: the ten words its decoder direction
    promotes (the logit lens on the direction)."""
    from interp.experiments.lens import direction_words
    from interp.models.loading import load_model

    loaded = load_model(model)
    rows = []
    for path, sae in saes.items():
        site = str(sae.metadata.get("hook_name", ""))
        if not site.startswith("lm."):
            continue
        for j, found in enumerate(direction_words(loaded, sae.W_dec.detach())):
            rows.append(
                {"site": site, "sae": Path(path).name, "feature": j, "words": " ".join(found)}
            )
    return pd.DataFrame(rows, columns=["site", "sae", "feature", "words"])


COMMANDS = [
    Command(
        name="sae train",
        help="cache -> sparse autoencoders of its sites (TopK, BatchTopK, ReLU), SAELens's format",
        description="Writes OUT/<site>/<sae>/cfg.json and sae_weights.safetensors (SAELens "
        "reads them), OUT/<site>/training_log.csv and OUT/sae_metrics.csv (held-out fraction "
        "of variance unexplained, L0, dead and dense features).",
        config=SaeTrainConfig,
        step=sae_train_step,
    ),
    Command(
        name="sae features",
        help="SAEs + cache -> each feature against the attributes of the tokens' objects",
        description="Writes OUT/features.csv (per feature and attribute: the best class, "
        "its AUROC, precision at the feature's top activations, the feature's frequency) and "
        "OUT/feature_counts.csv (per site, SAE and attribute: the features specific to it, "
        "with the probe's accuracy where --probes is given).",
        config=SaeFeaturesConfig,
        step=sae_features_step,
    ),
    Command(
        name="sae pages",
        help="an SAE's features as pictures: top patches outlined, histograms, attributes",
        description="Writes OUT/feature_grid.png (one row per feature, its top-activating "
        "patches) and OUT/feature_pages.html (per feature: the patches, the histogram of "
        "its activations, its best attributes from --table and its words from --words).",
        config=SaePagesConfig,
        step=sae_pages_step,
    ),
]
