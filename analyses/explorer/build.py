"""What the explorer shows, computed with the model: for each chosen image, condition,
depth (site) and token, the object under the token, the logit lens's top words and the
rank of the object's class word, the attention the answer position pays to the token
(mean and max over heads), the token's top sparse features and a token probe's
prediction. The result is one JSON-able dict (the view's data), read by the page and the
notebook widget alike; :func:`view_table` gives it as a tidy table.

Every number comes from the toolkit's own functions (``capture_tokens``,
``attention_records``, ``read_out``, ``box_label_map``, the SAE's ``encode``,
``LinearProbe``), so a test compares the view with them.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from interp.errors import ConfigError
from interp.layout import TokenLayout, box_label_map
from interp.sites import parse_site
from interp.sources import ImageSet

__all__ = ["VIEW_FORMAT", "ViewData", "build_view", "view_table"]

VIEW_FORMAT = "vlm-interp explorer 1"
# The probe's tokens are held for every image, site and condition until the probes are
# fitted: chosen automatically only when they fit in this much memory.
PROBE_MEMORY = 2 * 2**30


@dataclass
class ViewData:
    """The view's data (:attr:`data`, JSON-able: what the page and the widget draw) and
    how long each part took to compute (seconds)."""

    data: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)

    def table(self) -> pd.DataFrame:
        """:func:`view_table` of :attr:`data`."""
        return view_table(self.data)


def _picture(image: np.ndarray, side: int) -> str:
    """A PNG data URI of ``image`` ``(H, W, 3)`` uint8, at most ``side`` px a side."""
    from PIL import Image

    from analyses.pages import png_uri

    picture = Image.fromarray(image)
    if max(picture.size) > side:
        picture.thumbnail((side, side), Image.Resampling.LANCZOS)
    return png_uri(picture)


def _rounded(values: np.ndarray, digits: int = 5) -> list[float | None]:
    """Floats to ``digits`` significant digits, NaN as None (JSON's null)."""
    return [None if v != v else float(f"{v:.{digits}g}") for v in np.asarray(values).tolist()]


def _layout_key(layout: TokenLayout) -> bytes:
    return layout.boxes.tobytes() + layout.crops.tobytes() + layout.grid.tobytes()


class _Objects:
    """Which class of each categorical attribute every object of an image has: per-object
    labels where the data have them, else the image's label for its first object (as the
    lens table reads it)."""

    def __init__(self, data: ImageSet) -> None:
        self.classes = dict(data.label_classes)
        self.per_object = {a: v for a, v in data.object_labels().items() if a in self.classes}
        self.labels = data.labels

    def of(self, image: int, attribute: str, objects: np.ndarray) -> np.ndarray:
        """``(tokens,)`` class index of ``attribute`` of the object under each token (-1:
        none or unknown); ``objects`` ``(tokens,)`` the object under each token."""
        out = np.full(len(objects), -1, dtype=np.int64)
        if attribute in self.per_object:
            table = self.per_object[attribute][image]  # (max objects,)
            over = (objects >= 0) & (objects < len(table))
            out[over] = table[objects[over]]
        elif attribute in self.labels:
            out[objects == 0] = int(self.labels[attribute][image])
        return out

    def names(self, image: int, n_objects: int) -> list[str]:
        """What to call each object of an image: its classes (e.g. ``red circle big``)."""
        names = []
        for k in range(n_objects):
            words = [
                self.classes[a][int(v[image, k])]
                for a, v in self.per_object.items()
                if k < v.shape[1] and v[image, k] >= 0
            ]
            if not self.per_object and k == 0:
                words = [
                    str(self.classes[a][int(self.labels[a][image])])
                    for a in self.classes
                    if a in self.labels and self.labels[a][image] >= 0
                ]
            names.append(f"object {k}" + (f": {' '.join(words)}" if words else ""))
        return names


def _lens_words(loaded: Any, data: ImageSet) -> dict[str, np.ndarray]:
    """Per categorical attribute whose class words are distinct tokens of the model: the
    token id of each class word (by its first token, as the lens table scores them); the
    others are left out of the view."""
    from interp.experiments.lens import class_word_ids

    words, _ = class_word_ids(loaded, data)
    return {attribute: np.asarray(ids, dtype=np.int64) for attribute, ids in words.items()}


def _probe_attribute(data: ImageSet, probe: str | None, lens: dict[str, np.ndarray]) -> str | None:
    """The attribute of the token probes: ``probe`` (checked), or, with ``"auto"``, the
    first categorical attribute with per-object labels (else the first lens attribute)."""
    if probe is None:
        return None
    if probe != "auto":
        if probe not in data.label_classes:
            raise ConfigError(
                f"probe={probe!r} is not a categorical label of the data; its categorical "
                f"labels: {', '.join(data.label_classes) or 'none'}"
            )
        return probe
    per_object = [a for a in data.object_labels() if a in data.label_classes]
    return (per_object or list(lens) or list(data.label_classes) or [None])[0]


@dataclass
class _Probed:
    """One site and condition's tokens for its probe: each image's tokens and classes."""

    tokens: list[np.ndarray] = field(default_factory=list)  # (tokens_i, d) float16
    classes: list[np.ndarray] = field(default_factory=list)  # (tokens_i,) -1: none


def _fit_probes(
    held: dict[tuple[str, str], _Probed], seed: int, per_image: int
) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """Per (condition, site): every token's predicted class and its probability, from a
    logistic probe (C = 1) fitted on the tokens over objects of the other images' folds
    (5 folds by image, at most ``per_image`` tokens of an image in training)."""
    from sklearn.model_selection import GroupKFold

    from probes.linear import LinearProbe

    out = {}
    rng = np.random.default_rng(seed)
    for key, probed in held.items():
        n_images = len(probed.tokens)
        labelled = [i for i in range(n_images) if (probed.classes[i] >= 0).any()]
        seen = {int(c) for i in labelled for c in probed.classes[i] if c >= 0}
        if len(labelled) < 2 or len(seen) < 2:
            continue
        folds = GroupKFold(n_splits=min(5, len(labelled)))
        predicted = [np.full(len(t), -1, dtype=np.int64) for t in probed.tokens]
        confidence = [np.full(len(t), np.nan) for t in probed.tokens]
        for train, _ in folds.split(labelled, groups=labelled):
            train_images = [labelled[j] for j in train]
            rows, ys = [], []
            for i in train_images:
                over = np.flatnonzero(probed.classes[i] >= 0)
                chosen = rng.permutation(over)[:per_image]
                rows.append(probed.tokens[i][chosen])
                ys.append(probed.classes[i][chosen])
            y = np.concatenate(ys)
            if len(set(y.tolist())) < 2:
                continue
            fitted = LinearProbe(Cs=1.0).fit(np.concatenate(rows).astype(np.float32), y)
            for i in set(range(n_images)) - set(train_images):
                if (predicted[i] >= 0).any() and i not in labelled:
                    continue  # an unlabelled image: predicted by the first fold only
                proba = fitted.predict_proba(probed.tokens[i].astype(np.float32))
                predicted[i] = fitted.classes_[proba.argmax(1)].astype(np.int64)
                confidence[i] = proba.max(1)
        out[key] = (predicted, confidence)
    return out


class _Reading:
    """What the view shows of each image's tokens at one site under one condition, read
    from the captured tokens (and attention weights) into the images' entries."""

    def __init__(
        self,
        loaded: Any,
        objects: _Objects,
        lens: dict[str, np.ndarray],
        saes: dict[str, Any],
        probed: str | None,
        images: list[dict[str, Any]],
        index: np.ndarray,
        n_words: int,
        n_features: int,
    ) -> None:
        self.loaded, self.objects, self.lens, self.saes = loaded, objects, lens, saes
        self.probed, self.images, self.index = probed, images, index
        self.n_words, self.n_features = n_words, n_features
        self.words: dict[int, int] = {}  # token id -> its place in the view's word list
        self.held: dict[tuple[str, str], _Probed] = {}  # the probes' tokens

    def put(self, j: int, condition: str, site: str, key: str, values: np.ndarray) -> None:
        self.images[j]["values"][condition].setdefault(site, {})[key] = _rounded(values)

    def check_probe_memory(self, acts: dict[str, torch.Tensor], passes: int) -> None:
        """Leave the automatic probes out (with a warning) where holding every token for
        them would take more than :data:`PROBE_MEMORY`."""
        estimate = sum(a[0].numel() for a in acts.values()) * 2 * passes  # float16
        if estimate > PROBE_MEMORY:
            warnings.warn(
                f"token probes left out: holding every token for them would take about "
                f"{estimate / 2**30:.1f} GiB; name probe= an attribute to fit them anyway, "
                f"or show fewer images or sites",
                stacklevel=3,
            )
            self.probed = None

    def read(
        self,
        j: int,
        condition: str,
        site: str,
        tokens: torch.Tensor,
        weights: torch.Tensor | None,
    ) -> None:
        """Image ``j``'s ``tokens`` ``(tokens, d)`` at ``site`` (and, at an LM site with
        attention, ``weights`` ``(heads, tokens)``)."""
        from interp.experiments.lens import lens_summary

        image = int(self.index[j])
        over = np.asarray(self.images[j]["token_object"][site])  # (tokens,)
        if parse_site(site).stage == "lm" and self.lens:
            targets = {}
            for attribute, word_ids in self.lens.items():
                classes = self.objects.of(image, attribute, over)  # (tokens,)
                targets[attribute] = torch.as_tensor(
                    np.where(classes >= 0, word_ids[classes.clip(0)], -1)
                )  # (tokens,) the class word of the object under each token, -1 none
            best, ranks = lens_summary(self.loaded, tokens, self.n_words, targets)
            self.images[j]["top_words"][condition][site] = [
                [self.words.setdefault(int(w), len(self.words)) for w in ids]
                for ids in best.tolist()
            ]
            for attribute, rank in ranks.items():
                self.put(j, condition, site, f"lens_rank:{attribute}", rank.numpy())
        if weights is not None:
            weights = weights.float()  # (heads, tokens)
            self.put(j, condition, site, "attention_mean", weights.mean(0).numpy())
            self.put(j, condition, site, "attention_max", weights.amax(0).numpy())
        if site in self.saes:
            self.images[j]["top_features"][condition][site] = self._features(site, tokens)
        if self.probed is not None:
            probed = self.held.setdefault((condition, site), _Probed())
            probed.tokens.append(tokens.to(torch.float16).numpy())  # (tokens, d)
            probed.classes.append(self.objects.of(image, self.probed, over))

    def _features(self, site: str, tokens: torch.Tensor) -> list[list[list[float]]]:
        """Each token's largest active features of the site's SAE, ``[feature, value]``."""
        sae = self.saes[site]
        if sae.d_in != tokens.shape[-1]:
            raise ConfigError(
                f"the SAE of {site} reads tokens of width {sae.d_in}, the site's are "
                f"{tokens.shape[-1]} wide: an SAE of another model or site; pass the SAEs "
                f"trained on this model's cache"
            )
        with torch.no_grad():
            found = sae.encode(tokens.float())  # (tokens, d_sae)
        top = torch.topk(found, min(self.n_features, found.shape[-1]))
        return [
            [[int(f), float(f"{a:.4g}")] for f, a in zip(fs, values, strict=True) if a > 0]
            for fs, values in zip(top.indices.tolist(), top.values.tolist(), strict=True)
        ]


def _probe_entries(
    reading: _Reading,
    order: list[int],
    data: ImageSet,
    sites: list[str],
    seed: int,
    per_image: int,
) -> dict[str, Any] | None:
    """Fit the token probes on the tokens ``reading`` held (image ``order[k]`` the k-th
    held), put each token's prediction and confidence in the images' values; what the
    view says of them (None, with a warning, where none could be fitted)."""
    attribute = reading.probed
    fitted = _fit_probes(reading.held, seed, per_image)
    for (condition, site), (predicted, confidence) in fitted.items():
        for place, j in enumerate(order):
            reading.put(j, condition, site, "probe_class", predicted[place].astype(float))
            reading.put(j, condition, site, "probe_confidence", confidence[place])
    if not fitted:
        warnings.warn(
            f"token probes of {attribute!r} left out: fewer than two images or classes with "
            f"tokens over objects",
            stacklevel=3,
        )
        return None
    return {
        "attribute": attribute,
        "classes": list(data.label_classes[attribute]),
        "sites": sorted({s for _, s in fitted}, key=sites.index),
        "folds": 5,
        "per_image": per_image,
    }


def _measures(
    attention_sites: list[str],
    lm_sites: list[str],
    lens: list[str],
    probe: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    """The measures a heatmap can show: key, title, sites, and how to colour them."""
    measures = []
    if attention_sites:
        measures += [
            {"key": "attention_mean", "title": "attention (mean over heads)",
             "sites": attention_sites},
            {"key": "attention_max", "title": "attention (max over heads)",
             "sites": attention_sites},
        ]  # fmt: skip
    for attribute in lens:
        measures.append(
            {
                "key": f"lens_rank:{attribute}", "title": f"lens rank of the {attribute} word",
                "sites": lm_sites, "log": True, "reverse": True, "integer": True,
            }
        )  # fmt: skip
    if probe is not None:
        measures.append(
            {
                "key": "probe_confidence",
                "title": f"probe confidence ({probe['attribute']})",
                "sites": probe["sites"],
            }
        )
    return measures


def _image_entries(
    adapter: Any,
    data: ImageSet,
    index: np.ndarray,
    maps: list[np.ndarray],
    sites: list[str],
    conditions: list[str],
    objects: _Objects,
    names: list[str],
    picture_side: int,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Each image's entry (its picture, labels, objects, each site's layout and the
    object under each token; values to be filled) and the distinct layouts they share."""
    layouts: dict[bytes, int] = {}
    layout_list: list[dict[str, Any]] = []
    out_images: list[dict[str, Any]] = []
    for j, i in enumerate(index.tolist()):
        size = tuple(int(v) for v in data.sizes[i])
        image = {
            "index": i,
            "name": names[i],
            "size": list(size),
            "picture": _picture(np.asarray(data.crops([i])[0]), picture_side),
            "labels": {
                a: (data.label_classes[a][int(v[i])] if int(v[i]) >= 0 else None)
                if a in data.label_classes
                else (None if v[i] != v[i] else float(v[i]))
                for a, v in data.labels.items()
            },
            "objects": objects.names(i, int(maps[j].max()) + 1 if maps[j].size else 0),
            "layout": {},
            "token_object": {},
            "values": {c: {} for c in conditions},
            "top_words": {c: {} for c in conditions},
            "top_features": {c: {} for c in conditions},
        }
        for site in sites:
            layout = adapter.token_layout(site, size)
            key = _layout_key(layout)
            if key not in layouts:
                layouts[key] = len(layout_list)
                layout_list.append(
                    {
                        "boxes": np.round(layout.boxes, 3).tolist(),
                        "crops": layout.crops.tolist(),
                        "grid": layout.grid.tolist(),
                    }
                )
            image["layout"][site] = layouts[key]
            image["token_object"][site] = box_label_map(maps[j], layout.boxes)[0].tolist()
        out_images.append(image)
    return out_images, layout_list


def build_view(
    loaded: Any,
    data: ImageSet,
    *,
    images: Sequence[int] | None = None,
    sites: Sequence[str] | None = None,
    conditions: Sequence[str] | None = None,
    prompt: str | None = None,
    saes: dict[str, Any] | None = None,
    probe: str | None = "auto",
    n_words: int = 5,
    n_features: int = 5,
    probe_tokens: int = 16,
    batch_size: int = 8,
    seed: int = 0,
    picture_side: int = 448,
    names: Sequence[str] | None = None,
    progress: bool = False,
) -> ViewData:
    """The explorer's data for ``images`` (indices into ``data``; default the first 16)
    of ``loaded`` at ``sites`` (default all) under ``conditions`` (default the model's:
    baseline, shuffle, lower_mask where it has an LLM).

    ``saes``: site -> a :class:`~interp.models.sae.SparseAutoencoder` (its ``n_features``
    largest features per token are shown); ``probe``: the categorical attribute of the
    token probes (``"auto"``: the first with per-object labels; None: no probes).
    Attention needs a model loaded with eager attention (else it is left out, with a
    warning); the lens and attention need a language model. ``prompt``: the exact text
    (default the adapter's prompt for "Describe the image.")."""
    import time

    from tqdm.auto import tqdm

    from interp.experiments.attention import attention_records
    from interp.experiments.interventions import (
        BatchContext,
        check_conditions,
        make_intervention,
        prepare,
    )
    from interp.models.tracing import capture_tokens

    adapter = loaded.adapter
    timings: dict[str, float] = {}
    started = time.perf_counter()
    index = np.arange(min(16, len(data))) if images is None else np.asarray(images, np.int64)
    if not len(index):
        raise ConfigError("images must name at least one image")
    bad = [int(i) for i in index if not 0 <= i < len(data)]
    if bad:
        raise ConfigError(
            f"images {bad[:5]} are not in the data, which has images 0 to {len(data) - 1}"
        )
    sites = [adapter.check_site(s) for s in (sites or adapter.sites())]
    sizes = [tuple(int(v) for v in data.sizes[i]) for i in index]
    conditions = check_conditions(
        list(conditions or adapter.conditions or ["baseline"]), adapter, sorted(set(sizes))
    )
    prompt = prompt if prompt is not None else adapter.default_prompt("Describe the image.")
    lm_sites = [s for s in sites if parse_site(s).stage == "lm"]
    has_lm = adapter.has_language_model
    attention = has_lm and bool(lm_sites)
    if attention and adapter.attention_implementation != "eager":
        warnings.warn(
            f"attention left out of the view: the model uses "
            f"{adapter.attention_implementation!r} attention, which forms no weights; load "
            f"it with attn_implementation='eager' (interp view does)",
            stacklevel=2,
        )
        attention = False
    lens = _lens_words(loaded, data) if has_lm and lm_sites else {}
    saes = {adapter.check_site(s): sae for s, sae in (saes or {}).items()}
    unknown = sorted(set(saes) - set(sites))
    if unknown:
        raise ConfigError(f"SAEs of sites {unknown} that the view does not show ({sites})")
    probed_attribute = _probe_attribute(data, probe, lens)
    objects = _Objects(data)

    interventions = {c: make_intervention(c, seed=seed) for c in conditions}
    prepare(interventions, loaded, data, prompt, batch_size)
    maps = data.crop_maps(index)
    tokenizer = getattr(loaded.processor, "tokenizer", None)
    names = list(names) if names is not None else data.names()
    out_images, layout_list = _image_entries(
        adapter, data, index, maps, sites, conditions, objects, names, picture_side
    )
    timings["layouts"] = time.perf_counter() - started

    reading = _Reading(
        loaded, objects, lens, saes, probed_attribute, out_images, index, n_words, n_features
    )
    groups = adapter.batch_groups(np.asarray(sizes).reshape(-1, 2))  # positions in index
    batches = [g[s : s + batch_size] for g in groups for s in range(0, len(g), batch_size)]
    bar = tqdm(total=len(batches) * len(conditions), unit="pass", disable=not progress)
    lm_layers = [parse_site(s).layer for s in lm_sites]
    with bar:
        for batch in batches:
            chosen = index[batch]
            pictures = data.crops(chosen)
            inputs = adapter.build_inputs(pictures, prompt)
            context = BatchContext(
                object_maps=[maps[j] for j in batch], indices=chosen, prompt=prompt
            )
            for condition in conditions:
                tick = time.perf_counter()
                captured = capture_tokens(
                    loaded,
                    pictures,
                    sites,
                    prompt=prompt,
                    intervention=interventions[condition],
                    context=context,
                    records=attention_records(loaded, inputs, lm_layers) if attention else [],
                    extra=False,
                    inputs=inputs,
                    dtype=None,  # the model's: every site of a batch is held at once
                )
                timings["forward"] = timings.get("forward", 0.0) + time.perf_counter() - tick
                if reading.probed is not None and probe == "auto" and not reading.held:
                    reading.check_probe_memory(captured.acts, len(index) * len(conditions))
                tick = time.perf_counter()
                for site in sites:
                    weights = (
                        captured.records[f"attention.{parse_site(site).layer}"]
                        if attention and site in lm_sites
                        else None
                    )  # (batch, heads, tokens)
                    for row, j in enumerate(batch):
                        found = None if weights is None else weights[row]
                        reading.read(j, condition, site, captured.acts[site][row], found)
                timings["readout"] = timings.get("readout", 0.0) + time.perf_counter() - tick
                bar.update(1)
    probe_info = None
    if reading.probed is not None:
        tick = time.perf_counter()
        order = [j for batch in batches for j in batch]  # the order images were held in
        probe_info = _probe_entries(reading, order, data, sites, seed, probe_tokens)
        timings["probes"] = time.perf_counter() - tick
    measures = _measures(lm_sites if attention else [], lm_sites, list(lens), probe_info)
    id_of = sorted(reading.words, key=reading.words.get)
    word_list = tokenizer.convert_ids_to_tokens(id_of) if tokenizer is not None else []
    timings["total"] = time.perf_counter() - started
    view = {
        "format": VIEW_FORMAT,
        "model": str(getattr(loaded, "source", "")),
        "family": adapter.family,
        "prompt": prompt,
        "sites": sites,
        "conditions": conditions,
        "measures": measures,
        "attributes": {
            a: list(classes) for a, classes in data.label_classes.items() if a in data.labels
        },
        "lens_attributes": list(lens),
        "probe": probe_info,
        "features": {s: {"d_sae": int(sae.d_sae), "shown": n_features} for s, sae in saes.items()},
        "layouts": layout_list,
        "words": [str(w) for w in word_list],
        "images": out_images,
    }
    return ViewData(view, {k: round(v, 3) for k, v in timings.items()})


VIEW_COLUMNS = ("image", "name", "condition", "site", "token", "crop", "row", "col", "object")


def view_table(view: dict[str, Any]) -> pd.DataFrame:
    """The view's numbers as a tidy table: one row per image, condition, site and token
    (columns ``image`` (its index in the data), ``name``, ``condition``, ``site``,
    ``token``, ``crop``, ``row``, ``col``, ``object`` (-1 background, -2 padding)), one
    column per measure (``attention_mean``, ``lens_rank:<attribute>``, ...; NaN where a
    site has none), ``words`` (the lens's top words) and ``features`` (the top sparse
    features, ``(feature, activation)`` pairs)."""
    rows = []
    for image in view["images"]:
        for condition in view["conditions"]:
            for site in view["sites"]:
                layout = view["layouts"][image["layout"][site]]
                values = image["values"][condition].get(site, {})
                words = image["top_words"][condition].get(site)
                features = image["top_features"][condition].get(site)
                for token, obj in enumerate(image["token_object"][site]):
                    row = {
                        "image": image["index"], "name": image["name"],
                        "condition": condition, "site": site, "token": token,
                        "crop": layout["crops"][token], "row": layout["grid"][token][0],
                        "col": layout["grid"][token][1], "object": obj,
                    }  # fmt: skip
                    for key, found in values.items():
                        row[key] = np.nan if found[token] is None else found[token]
                    if words is not None:
                        row["words"] = " ".join(view["words"][w] for w in words[token])
                    if features is not None:
                        row["features"] = [tuple(f) for f in features[token]]
                    rows.append(row)
    return pd.DataFrame(rows)
