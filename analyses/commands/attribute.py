"""``interp attribute``: which patches and which depths carry an answer: attribution
patching, integrated gradients (a site's tokens or the pixels) and causal tracing, on one
or many clean / corrupted pairs, beside exact patching where asked."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pandas as pd

from analyses.commands.command import Command, StepResult
from analyses.commands.inputs import load_step_model
from analyses.commands.options import _Formats, _Model, _Pair, check_named
from analyses.outputs import check_output_folder, check_writable, write_figure, write_table
from interp.errors import ConfigError
from interp.experiments.attribution import BASELINES
from interp.options import option

__all__ = ["ATTRIBUTE_FILES", "ATTRIBUTE_METHODS", "AttributeConfig", "attribute_step"]

ATTRIBUTE_METHODS = ("attribution", "exact", "integrated_gradients", "pixels", "causal_tracing")
ATTRIBUTE_FILES = {
    "attribution": "attribution.csv",  # every pair's rows, and the mean over pairs
    "completeness": "completeness.csv",  # integrated gradients' check, per pair and site
    "agreement": "agreement.csv",  # each method against exact patching, per pair and site
}


@dataclass
class AttributeConfig(_Pair, _Model, _Formats):
    """``interp attribute``: the chosen ``methods`` on ``n_pairs`` pairs (your own, or
    built-in twin pairs) at ``sites``, into the folder ``out``: ``attribution.csv``
    (pair, method, site, token, row, col, value, ...), the integrated gradients'
    completeness, the agreement with exact patching, and a per-depth map of each method
    (the mean over the pairs)."""

    methods: list[str] | None = option(
        "some of: attribution (attribution patching: one forward and one backward pass per "
        "pair), exact (real patching: a forward pass per token), integrated_gradients (at "
        "each site's tokens), pixels (integrated gradients to the pixels, per patch), "
        "causal_tracing (noise the image tokens, restore one site x token window) "
        "(default: attribution)",
        default=None,
        choices=ATTRIBUTE_METHODS,
    )
    n_pairs: int = option(
        "built-in twin pairs to attribute (the maps are their mean)", default=1, minimum=1
    )
    sites: list[str] | None = option(
        "sites (default: the projector and every LM layer)", default=None
    )
    baseline: str = option(
        "integrated gradients' baseline image: black, mean (the image's mean colour) or "
        "blur (a Gaussian blur of a tenth of the shorter side)",
        default="black",
        choices=BASELINES,
    )
    steps: int = option("integrated gradients' steps (midpoint sum)", default=64, minimum=1)
    noise: float = option(
        "causal tracing's noise, in standard deviations of the image tokens entering the LM",
        default=3.0,
        minimum=0,
    )
    samples: int = option("causal tracing's noise draws, averaged", default=3, minimum=1)
    window: int = option(
        "causal tracing's restored window: window x window cells of the patch grid",
        default=1,
        minimum=1,
    )
    batch_size: int = option(
        "patched copies (or integration steps) per forward pass", default=32, minimum=1
    )
    out: str = option("output folder", default="attribution")
    overwrite: bool = option("replace existing outputs", default=False)
    progress: bool = option("show progress bars (loading the model)", default=True)

    def check(self) -> None:
        super().check()
        check_named(self.out, "out", "an output folder")
        if self.clean is not None and self.n_pairs != 1:
            raise ConfigError(
                f"n_pairs={self.n_pairs} counts built-in twin pairs; with your own pair "
                f"(clean, corrupt) leave it out"
            )


def _run_method(
    method: str, loaded: Any, pair: Any, sites: list[str], config: AttributeConfig
) -> tuple[pd.DataFrame, list[dict]]:
    """One method on one pair: its rows in the attribution table's columns, and (for
    integrated gradients) the completeness of each site."""
    from analyses.attribution import as_attribution_rows
    from interp.experiments.attribution import causal_tracing, integrated_gradients
    from interp.experiments.patching import attribution_margins, patch_margins

    if method == "exact":
        found = patch_margins(loaded, pair, sites, batch_size=config.batch_size)
        return as_attribution_rows(found), []
    if method == "attribution":
        return as_attribution_rows(attribution_margins(loaded, pair, sites)), []
    if method == "causal_tracing":
        found = causal_tracing(
            loaded, pair.clean, pair.question, pair.answer, sites, noise=config.noise,
            samples=config.samples, window=config.window, seed=config.seed,
            batch_size=config.batch_size, name=pair.name,
        )  # fmt: skip
        return found, []
    parts, checks = [], []
    for site in ["pixels"] if method == "pixels" else sites:
        table, check = integrated_gradients(
            loaded, pair.clean, pair.question, pair.answer, site=site,
            baseline=config.baseline, steps=config.steps, batch_size=config.batch_size,
            name=pair.name,
        )  # fmt: skip
        if method == "pixels":
            table["method"] = "pixels"
        parts.append(table)
        checks.append(
            {
                "pair": pair.name, "method": method, "site": site,
                "baseline": config.baseline, "steps": check.steps,
                "sum_of_attributions": check.total, "logit_at_image": check.at_image,
                "logit_at_baseline": check.at_baseline, "difference": check.difference,
                "relative_error": check.relative_error,
            }
        )  # fmt: skip
    return pd.concat(parts, ignore_index=True), checks


def attribute_step(config: AttributeConfig) -> StepResult:
    """The chosen methods on ``config``'s pairs and sites, into the folder
    ``config.out``: the tables ``attribution`` (every pair's rows, then each method's
    mean over the pairs), ``completeness`` (integrated gradients) and ``agreement``
    (each method against exact patching, where both ran); a map per method; the seconds
    each method took (``extras["seconds"]``)."""
    from analyses.answer_figures import attribution_map
    from analyses.attribution import mean_over_pairs, method_agreement
    from analyses.files import FIGURE_NAMES

    folder = check_output_folder(config.out)
    methods = list(dict.fromkeys(config.methods or ["attribution"]))
    formats = config.formats or ["html"]
    paths = {key: folder / name for key, name in ATTRIBUTE_FILES.items()}
    figure = FIGURE_NAMES["attribution"]
    paths.update({f"{figure}_{m}.{f}": folder / f"{figure}_{m}.{f}" for m in methods
                  for f in formats})  # fmt: skip
    check_writable(paths.values(), config.overwrite)
    own = config.own_pair()  # read (and checked) before the model loads
    loaded = load_step_model(config)
    adapter = loaded.adapter
    pairs = [own] if own is not None else config.pairs(adapter, config.n_pairs)
    sites = config.sites or ["projector", *(f"lm.{i}" for i in range(adapter.n_lm_layers))]
    tables, checks, seconds = [], [], dict.fromkeys(methods, 0.0)
    for pair in pairs:
        for method in methods:
            started = time.perf_counter()
            table, found = _run_method(method, loaded, pair, sites, config)
            seconds[method] += time.perf_counter() - started
            tables.append(table)
            checks += found
    rows = pd.concat(tables, ignore_index=True)
    rows = rows[rows["token"] >= 0]
    mean = mean_over_pairs(rows) if len(pairs) > 1 else rows.iloc[0:0]
    table = pd.concat([rows, mean], ignore_index=True)
    completeness = pd.DataFrame(checks)
    compared = [m for m in methods if m not in ("exact", "pixels")] if "exact" in methods else []
    agreement = (
        pd.concat([method_agreement(rows, m) for m in compared], ignore_index=True)
        if compared
        else pd.DataFrame()
    )  # fmt: skip  (pixels: per patch, no site of exact's)
    write_table(table, paths["attribution"])
    write_table(completeness, paths["completeness"])
    write_table(agreement, paths["agreement"])
    shown_pair = mean if len(pairs) > 1 else rows
    figures = {}
    for method in methods:
        figures[method] = attribution_map(shown_pair, method=method, picture=pairs[0].clean)
        for fmt in formats:
            write_figure(figures[method], paths[f"{figure}_{method}.{fmt}"])
    peak = shown_pair.groupby(["method", "site"], sort=False)["value"].agg(["max", "sum"])
    lines = [peak.round(3).to_string()]
    if not completeness.empty:
        worst = completeness.groupby("site", sort=False)["relative_error"].max()
        lines.append("integrated gradients, largest relative completeness error per site:")
        lines.append(worst.round(4).to_string())
    if not agreement.empty:
        lines.append("rank correlation with exact patching (Spearman, mean over pairs):")
        lines.append(agreement.groupby(["method", "site"], sort=False)["spearman"].mean()
                     .round(3).to_string())  # fmt: skip
    timing = ", ".join(f"{m} {s:.1f} s" for m, s in seconds.items())
    return StepResult(
        summary=f"{len(methods)} methods on {len(pairs)} pairs at {len(sites)} sites ({timing})",
        paths=paths,
        tables={"attribution": table, "completeness": completeness, "agreement": agreement},
        shown="\n".join(lines),
        extras={"figures": figures, "seconds": seconds},
    )


COMMAND = Command(
    name="attribute",
    help="which patches and depths carry the answer: attribution patching, integrated "
    "gradients, causal tracing (and exact patching to check them)",
    description="Writes OUT/attribution.csv (pair, method, site, token, row, col, value; the "
    "mean over pairs), OUT/completeness.csv, OUT/agreement.csv and "
    "OUT/attribution_map_<method>.<format> for each method.",
    config=AttributeConfig,
    step=attribute_step,
)
