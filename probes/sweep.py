"""Probe every (site, attribute, token selection, condition) of a cache into one tidy table.

Each cell is a grouped, nested cross-validation (:mod:`probes.crossval`) with a control
task, the majority-class chance level and a bootstrap confidence interval over images.
A site is read from the HDF5 file once, as float32, and dropped before the next.
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from caches import BASELINE, CacheReader
from interp.errors import ConfigError
from interp.layout import box_label_map
from interp.names import as_names
from interp.sites import sort_sites
from interp.stimuli import OBJECT_ATTRIBUTES
from probes.crossval import Backend, group_folds, nested_logistic
from probes.regression import ALPHAS, nested_ridge, r2_score_groups
from probes.selections import Design, SiteLabels, check_selection, default_selections, select
from probes.solver import default_device
from probes.stats import bootstrap_ci, control_labels, majority_chance, per_group_sums

__all__ = [
    "TABLE_COLUMNS",
    "ProbeSettings",
    "probe_design",
    "probe_designs",
    "probeable",
    "site_labels",
    "sweep",
]

TABLE_COLUMNS = [
    "site",
    "depth",
    "attribute",
    "selection",
    "condition",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "chance",
    "control",
    "selectivity",
    "n",
]


@dataclass(frozen=True)
class ProbeSettings:
    """How each probe is cross-validated and summarised.

    ``n_splits`` outer folds grouped by image; ``n_inner`` inner folds choose ``C`` from
    ``Cs`` (the logistic probes of categorical attributes) and ``alpha`` from ``alphas``
    (the ridge probes of numeric ones); ``n_boot`` bootstrap resamples of images for the
    95% interval;
    ``tokens_per_image`` caps the ``token`` selection (None: every object token);
    ``backend``
    fits the logistic problems (default: the batched torch solver; see
    :func:`probes.crossval.sklearn_backend` for the scikit-learn reference);
    ``stack_selections`` solves every selection of a site in the same solver calls
    (their rows stacked on one feature matrix: far fewer, larger calls, which pays on a
    GPU, where a call costs its kernel launches, but multiplies the arithmetic on a CPU;
    the results are those of separate calls). None: stack when the default backend runs
    on a GPU.
    """

    n_splits: int = 5
    n_inner: int = 3
    Cs: tuple[float, ...] = (0.01, 0.1, 1.0)
    alphas: tuple[float, ...] = ALPHAS
    n_boot: int = 1000
    seed: int = 0
    tokens_per_image: int | None = 4
    backend: Backend | None = None
    stack_selections: bool | None = None

    def __post_init__(self) -> None:
        if self.n_splits < 2 or self.n_inner < 2:
            raise ConfigError(
                f"need at least 2 outer and 2 inner folds, got n_splits={self.n_splits}, "
                f"n_inner={self.n_inner}"
            )
        if not self.Cs or min(self.Cs) <= 0:
            raise ConfigError(f"Cs must be positive inverse penalties, got {self.Cs}")
        if not self.alphas or min(self.alphas) <= 0:
            raise ConfigError(f"alphas must be positive ridge penalties, got {self.alphas}")

    @property
    def stacked(self) -> bool:
        """Whether a site's selections share solver calls (see ``stack_selections``)."""
        if self.stack_selections is not None:
            return self.stack_selections
        return self.backend is None and default_device().type == "cuda"


def _control_seed(settings: ProbeSettings, attribute: str) -> int:
    """The control task's seed of one attribute: from its name, so a cell's result does not
    depend on which other attributes are probed beside it (a resumed or extended sweep
    gives the values of a sweep run at once)."""
    return settings.seed + zlib.crc32(attribute.encode()) % 2**16


def _standardised(X: np.ndarray) -> np.ndarray:
    scale = X.std(0)
    return (X - X.mean(0)) / np.where(scale > 1e-8, scale, 1.0)


def probe_design(
    design: Design, attributes: Sequence[str], folds_of_image: np.ndarray, settings: ProbeSettings
) -> list[dict]:
    """Rows (``attribute, metric, value, ci_low, ci_high, chance, control, selectivity,
    n``) of one selection's samples: accuracy of the categorical attributes (fitted
    together), R² of the numeric ones.

    ``folds_of_image`` ``(n_images,)`` is the outer fold of each image, shared by every
    selection and site so that all cells of a table use the same split.
    """
    return probe_designs({"": design}, attributes, folds_of_image, settings)[""]


def probe_designs(
    designs: dict[str, Design],
    attributes: Sequence[str],
    folds_of_image: np.ndarray,
    settings: ProbeSettings,
) -> dict[str, list[dict]]:
    """:func:`probe_design` of each named design; with ``settings.stacked`` all of them
    in one nested cross-validation (each design's rows cross-validated on their own).

    Categorical attributes (integer class labels) get logistic probes scored by accuracy;
    numeric ones (float labels) ridge probes scored by held-out R² (:mod:`probes.regression`),
    one design at a time. Rows come in the order of ``attributes``."""
    attributes = list(attributes)
    first = next(iter(designs.values()))
    numeric = [a for a in attributes if np.issubdtype(first.labels[a].dtype, np.floating)]
    categorical = [a for a in attributes if a not in numeric]
    out: dict[str, list[dict]] = {name: [] for name in designs}
    if categorical:
        for name, rows in _classifier_rows(designs, categorical, folds_of_image, settings).items():
            out[name] += rows
    order = {attribute: k for k, attribute in enumerate(attributes)}
    for name, design in designs.items():
        if numeric:
            out[name] += _regression_rows(design, numeric, folds_of_image, settings)
        out[name].sort(key=lambda row: order[row["attribute"]])
    return out


def _classifier_rows(
    designs: dict[str, Design],
    attributes: list[str],
    folds_of_image: np.ndarray,
    settings: ProbeSettings,
) -> dict[str, list[dict]]:
    """Accuracy rows of categorical ``attributes``, every design stacked where
    ``settings.stacked``."""
    if not settings.stacked and len(designs) > 1:
        return {
            name: _classifier_rows({name: design}, attributes, folds_of_image, settings)[name]
            for name, design in designs.items()
        }
    names = list(designs)
    L = len(attributes)
    sizes = [len(designs[name].X) for name in names]
    starts = np.concatenate([[0], np.cumsum(sizes)])
    n = int(starts[-1])
    X = np.concatenate([_standardised(designs[name].X) for name in names])  # (n, d)
    groups = np.concatenate([designs[name].groups for name in names])
    labels = np.zeros((len(names) * L, n), dtype=np.int64)  # 0 outside a design's rows
    control = np.zeros_like(labels)
    members = np.zeros(labels.shape, dtype=bool)
    for g, name in enumerate(names):
        design, rows = designs[name], slice(starts[g], starts[g + 1])
        for k, attribute in enumerate(attributes):
            labels[g * L + k, rows] = design.labels[attribute]
            control[g * L + k, rows] = control_labels(
                design.labels[attribute],
                design.units[attribute],
                _control_seed(settings, attribute),
            )
            members[g * L + k, rows] = True
    folds = folds_of_image[groups]
    result = nested_logistic(
        X,
        labels,
        folds,
        groups,
        settings.Cs,
        n_inner=settings.n_inner,
        control=control,
        seed=settings.seed,
        backend=settings.backend,
        members=None if len(names) == 1 else members,
    )
    out = {}
    for g, name in enumerate(names):
        rows, sets = slice(starts[g], starts[g + 1]), slice(g * L, (g + 1) * L)
        out[name] = _accuracy_rows(
            attributes,
            labels[sets, rows],
            control[sets, rows],
            result.predicted[sets, rows],
            result.control_predicted[sets, rows],
            designs[name].groups,
            folds[rows],
            settings,
        )
    return out


def _regression_rows(
    design: Design, attributes: list[str], folds_of_image: np.ndarray, settings: ProbeSettings
) -> list[dict]:
    """R² rows of numeric ``attributes`` of one design: held-out R² of a ridge probe,
    its control task's, a bootstrap interval over images, and chance 0 (the training mean
    predicts no variance)."""
    X = _standardised(design.X)
    targets = np.stack([design.labels[a].astype(np.float64) for a in attributes])  # (L, m)
    control = np.stack(
        [
            control_labels(design.labels[a], design.units[a], _control_seed(settings, a))
            for a in attributes
        ]
    ).astype(np.float64)
    folds = folds_of_image[design.groups]
    result = nested_ridge(
        X,
        targets,
        folds,
        design.groups,
        settings.alphas,
        n_inner=settings.n_inner,
        control=control,
        seed=settings.seed,
    )
    rows = []
    for k, attribute in enumerate(attributes):
        r2, sse, sst = r2_score_groups(targets[k], result.predicted[k], design.groups)
        control_r2, _, _ = r2_score_groups(control[k], result.control_predicted[k], design.groups)
        low, high = bootstrap_ci(sse, sst, n_boot=settings.n_boot, seed=settings.seed)
        rows.append(
            {
                "attribute": attribute,
                "metric": "r2",
                "value": r2,
                "ci_low": 1.0 - high,  # R² = 1 - SSE/SST: the interval turns over
                "ci_high": 1.0 - low,
                "chance": 0.0,
                "control": control_r2,
                "selectivity": r2 - control_r2,
                "n": len(targets[k]),
            }
        )
    return rows


def _accuracy_rows(
    attributes: list[str],
    labels: np.ndarray,
    control: np.ndarray,
    predicted: np.ndarray,
    control_predicted: np.ndarray,
    groups: np.ndarray,
    folds: np.ndarray,
    settings: ProbeSettings,
) -> list[dict]:
    """One row per attribute from ``(L, m)`` labels and held-out predictions."""
    rows = []
    for k, attribute in enumerate(attributes):
        correct = predicted[k] == labels[k]
        sums, counts = per_group_sums(correct, groups)
        low, high = bootstrap_ci(sums, counts, n_boot=settings.n_boot, seed=settings.seed)
        accuracy = float(correct.mean())
        control_accuracy = float((control_predicted[k] == control[k]).mean())
        rows.append(
            {
                "attribute": attribute,
                "metric": "accuracy",
                "value": accuracy,
                "ci_low": low,
                "ci_high": high,
                "chance": majority_chance(labels[k], folds),
                "control": control_accuracy,
                "selectivity": accuracy - control_accuracy,
                "n": len(correct),
            }
        )
    return rows


def site_labels(reader: CacheReader, attributes: Sequence[str], site: str) -> SiteLabels:
    """Labels of every selection of ``site`` (see :class:`probes.selections.SiteLabels`):
    the object under each token comes from the site's token layout (per image where the
    site is ragged)."""
    n = reader.n_written
    offsets = reader.offsets(site)[: n + 1]
    token_objects = np.empty(int(offsets[-1]), dtype=np.int8)  # flat, as the site's tokens
    ragged = reader.is_ragged(site)
    boxes = reader.layout(site).boxes  # (tokens, 4); ragged: every image's, flat
    for start in range(0, n, 64):
        stop = min(n, start + 64)
        maps = reader.object_map[start:stop]  # (chunk, H, W)
        if not ragged:
            token_objects[offsets[start] : offsets[stop]] = box_label_map(maps, boxes).ravel()
            continue
        for i in range(start, stop):
            rows = slice(offsets[i], offsets[i + 1])
            token_objects[rows] = box_label_map(maps[i - start], boxes[rows])[0]
    return SiteLabels(
        image={a: reader.labels(a)[:n] for a in attributes},
        objects={a: reader.object_labels(a)[:n] for a in reader.object_label_names},
        token_objects=token_objects,
    )


def _reuse_baseline(
    reader: CacheReader,
    site: str,
    condition: str,
    todo: dict[str, list[str]],
    computed: dict[tuple[str, str], list[dict]],
) -> list[dict] | None:
    """The baseline's rows of ``site`` as ``condition``'s, where every cell to do was
    probed under the baseline in this sweep and the site's activations under
    ``condition`` equal the baseline's bit for bit (the same samples, folds and seeds
    give the same results); None otherwise."""
    base = {(r["selection"], r["attribute"]): r for r in computed[(site, BASELINE)]}
    wanted = [(s, a) for s, attributes in todo.items() for a in attributes]
    if not all(key in base for key in wanted) or not reader.same_as_baseline(site, condition):
        return None
    return [{**base[key], "condition": condition} for key in wanted]


def probeable(reader: CacheReader, attributes: Sequence[str], n_splits: int) -> list[str]:
    """``attributes`` less those no probe can learn, each skipped with a warning that says
    why: missing values (NaN, or a class index < 0), or one value for every image. A class
    with fewer images than ``n_splits`` folds is kept, with a warning (some held-out
    images then carry a class their probe never saw)."""
    n = reader.n_written
    kept = []
    for attribute in attributes:
        values = reader.labels(attribute)[:n]
        classes = reader.label_classes(attribute)
        missing = np.isnan(values) if classes is None else values < 0
        if missing.any():
            warnings.warn(
                f"attribute {attribute!r} skipped: {int(missing.sum())} of {n} images have no "
                f"value (first: image {int(np.flatnonzero(missing)[0])}); fill them in or "
                f"drop those images",
                stacklevel=3,
            )
            continue
        if len(np.unique(values)) < 2:
            warnings.warn(
                f"attribute {attribute!r} skipped: every one of the {n} images has the same "
                f"value, so there is nothing to probe",
                stacklevel=3,
            )
            continue
        if classes is not None:
            found, counts = np.unique(values, return_counts=True)
            rare = [
                f"{classes[c]!r} ({k})" for c, k in zip(found, counts, strict=True) if k < n_splits
            ]
            if rare:
                warnings.warn(
                    f"attribute {attribute!r}: the classes {', '.join(rare)} have fewer images "
                    f"than the {n_splits} folds, so some of their held-out images are scored "
                    f"by a probe that never saw their class",
                    stacklevel=3,
                )
        kept.append(attribute)
    return kept


def sweep(
    reader: CacheReader,
    *,
    sites: Sequence[str] | None = None,
    attributes: Sequence[str] | None = None,
    conditions: Sequence[str] | None = None,
    selections: Sequence[str] | None = None,
    ablation_selections: Sequence[str] | None = None,
    settings: ProbeSettings | None = None,
    progress: bool = True,
    done: set[tuple[str, str, str, str]] | None = None,
    on_site: Callable[[pd.DataFrame], None] | None = None,
) -> pd.DataFrame:
    """Probe each site x condition x token selection x attribute: categorical attributes
    with logistic probes (``metric`` ``accuracy``), numeric ones with ridge probes
    (``metric`` ``r2``, chance 0). Attributes default to every label of the cache; one
    that is constant or has missing values is skipped with a warning (see
    :func:`probeable`).

    Returns the columns of :data:`TABLE_COLUMNS`; ``depth`` is the site's index in
    forward-pass order, ``n`` the number of held-out predictions (images, or tokens for
    the ``token`` selection), ``control`` the control task's accuracy and
    ``selectivity = value - control``. Selections default to every one
    (:func:`probes.selections.default_selections`); ``ablation_selections``, if given,
    replace them under every condition but ``baseline`` (a cheaper sweep that still
    shows what each ablation does).

    ``done`` holds ``(site, condition, selection, attribute)`` cells already probed: they
    are skipped (a site whose cells are all done is not read), and the rows of the rest
    are returned; ``on_site`` is called with the new rows of each site and condition as
    soon as they are probed (so a caller can keep them before the next). A cell's values
    do not depend on which other cells run beside it.
    """
    settings = settings or ProbeSettings()
    done = done or set()
    sites, attributes, conditions = (
        as_names(sites, "sites"),
        as_names(attributes, "attributes"),
        as_names(conditions, "conditions"),
    )
    selections = as_names(selections, "selections")
    ablation_selections = as_names(ablation_selections, "ablation_selections")
    all_sites = sort_sites(reader.sites)
    sites = sort_sites(sites) if sites else all_sites
    attributes = list(attributes) if attributes else reader.label_names
    unknown = [a for a in attributes if a not in reader.label_names]
    if unknown:
        raise ConfigError(
            f"attributes {unknown} are not labels of this cache; choose from {reader.label_names}"
        )
    attributes = probeable(reader, attributes, settings.n_splits)
    conditions = list(conditions) if conditions else reader.conditions
    for selection in [*(selections or []), *(ablation_selections or [])]:
        check_selection(selection)
    per_condition = {
        c: list(ablation_selections) if ablation_selections and c != BASELINE else selections
        for c in conditions
    }
    if any(chosen is None or "token" in chosen for chosen in per_condition.values()):
        # fail before any work on a cache without object labels
        for attribute in set(attributes) & set(OBJECT_ATTRIBUTES):
            reader.object_labels(attribute)
    folds_of_image = group_folds(np.arange(reader.n_written), settings.n_splits, settings.seed)
    rows = []
    labels_by_boxes: dict[bytes, SiteLabels] = {}  # sites sharing a layout share labels
    computed: dict[tuple[str, str], list[dict]] = {}  # (site, condition) -> its new rows
    conditions = sorted(conditions, key=lambda c: c != BASELINE)  # baseline first
    jobs = [(c, s) for c in conditions for s in sites]
    for condition, site in tqdm(jobs, desc="probing", unit="site", disable=not progress):
        counts = np.diff(reader.offsets(site)[: reader.n_written + 1])
        n_tokens = int(counts.min()) if len(counts) else 0  # the fewest of any image
        chosen = per_condition[condition] or default_selections(n_tokens)
        todo = {
            selection: [a for a in attributes if (site, condition, selection, a) not in done]
            for selection in chosen
        }
        todo = {selection: missing for selection, missing in todo.items() if missing}
        if not todo:
            continue
        if condition != BASELINE and (site, BASELINE) in computed:
            reused = _reuse_baseline(reader, site, condition, todo, computed)
            if reused is not None:  # the intervention does not reach this site
                rows += reused
                if on_site is not None:
                    on_site(pd.DataFrame(reused, columns=TABLE_COLUMNS))
                continue
        key = reader.layout(site).boxes.tobytes() + reader.offsets(site).tobytes()
        if key not in labels_by_boxes:
            labels_by_boxes[key] = site_labels(reader, attributes, site)
        labels = labels_by_boxes[key]
        tokens = reader.site_tokens(site, condition).check_finite(  # flat float32
            f"site {site!r} under {condition!r} of {reader.path}"
        )
        every = not tokens.ragged  # random_<n_tokens> pools every token only where dense
        new = []
        by_missing: dict[tuple[str, ...], list[str]] = {}  # selections sharing what is left
        for selection, missing in todo.items():
            by_missing.setdefault(tuple(missing), []).append(selection)
        for missing, group in by_missing.items():
            designs = {
                selection: select(
                    tokens, labels, selection, list(missing), settings.seed,
                    settings.tokens_per_image,
                )
                for selection in group
                # every token, pooled, is the "mean" selection's samples: fitted once
                if not (every and selection == f"random_{n_tokens}" and "mean" in group)
            }  # fmt: skip
            found = probe_designs(designs, list(missing), folds_of_image, settings)
            for selection in group:
                for row in found.get(selection, found.get("mean")):
                    new.append(
                        {
                            "site": site,
                            "depth": all_sites.index(site),
                            "selection": selection,
                            "condition": condition,
                            **row,
                        }
                    )
        order = {selection: k for k, selection in enumerate(chosen)}
        new.sort(key=lambda row: order[row["selection"]])  # selections in the asked order
        computed[(site, condition)] = new
        rows += new
        if on_site is not None:
            on_site(pd.DataFrame(new, columns=TABLE_COLUMNS))
        del tokens
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)
