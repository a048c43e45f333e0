"""Token selections: which visual tokens of a site a probe reads, and with which labels.

- ``mean``: all tokens, mean-pooled; one sample per image, labels of the image's first
  object (and its object count).
- ``on_object`` / ``off_object``: the mean of the tokens whose patch the first object
  covers / that no object covers: is the information where the object is drawn, or has
  it spread to the background tokens? (Tokens that see only the processor's padding are
  neither.)
- ``token``: every token that an object covers, on its own, labelled with *that*
  object's attributes (the image's count for ``count``); one sample per token, grouped
  by image for cross-validation.
- ``random_<k>``: the mean of ``k`` tokens drawn at random per image (seeded): how many
  tokens does a probe need? Over ``k = 1, 8, 64, ...`` (any ``k`` can be asked for) this
  is a redundancy curve; ``k`` = every token is the ``mean`` selection.

Sites whose images have different token counts (stored ragged) work the same way: every
selection reads the flat tokens and their per-image offsets (:class:`caches.SiteTokens`);
``random_<k>`` then needs ``k`` no larger than the fewest tokens of any image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from caches import SiteTokens
from interp.errors import ConfigError

__all__ = [
    "SELECTIONS",
    "Design",
    "SiteLabels",
    "check_selection",
    "check_selection_fits",
    "default_selections",
    "random_ks",
    "select",
]

SELECTIONS: tuple[str, ...] = ("mean", "on_object", "off_object", "token", "random_<k>")
_RANDOM = re.compile(r"^random_(\d+)$")


def check_selection(selection: str) -> str:
    """``selection`` if it names a token selection, else a ConfigError saying which do."""
    if not isinstance(selection, str):
        raise ConfigError(f"a token selection is a name such as 'mean', got {selection!r}")
    found = _RANDOM.match(selection)
    if found and int(found.group(1)) < 1:
        raise ConfigError(
            f"selection {selection!r} pools no token; random_<k> needs k >= 1 (e.g. random_1)"
        )
    if selection in SELECTIONS[:-1] or found:
        return selection
    raise ConfigError(
        f"unknown token selection {selection!r}; expected one of {', '.join(SELECTIONS)} "
        f"(e.g. random_4)"
    )


def check_selection_fits(selection: str, fewest: int, where: str) -> str:
    """``selection`` if it can be drawn from images of at least ``fewest`` tokens (``where``
    names the site), else a ConfigError with the largest ``k`` that can."""
    found = _RANDOM.match(check_selection(selection))
    if found and int(found.group(1)) > fewest:
        raise ConfigError(
            f"selection {selection!r} needs 1 <= k <= {fewest}, the fewest tokens of an "
            f"image {where}; choose random_<k> with k <= {fewest}"
        )
    return selection


def random_ks(n_tokens: int, base: int = 8) -> list[int]:
    """``1, base, base^2, ...`` below ``n_tokens``, then ``n_tokens`` itself (the mean of
    every token: the ``mean`` selection)."""
    ks = [1]
    while ks[-1] * base < n_tokens:
        ks.append(ks[-1] * base)
    return [k for k in ks if k < n_tokens] + [n_tokens]


def default_selections(n_tokens: int) -> list[str]:
    """Every selection, with the redundancy curve's ``k`` from :func:`random_ks`."""
    return ["mean", "on_object", "off_object", "token"] + [
        f"random_{k}" for k in random_ks(n_tokens)
    ]


@dataclass
class SiteLabels:
    """What the labels of any selection are made from (one cache, any site).

    ``image`` maps an attribute to ``(n,)`` classes of the image's first object (or of
    the image, for ``count``); ``objects`` maps the per-object attributes to ``(n,
    max objects)`` classes (-1: no such object); ``token_objects`` ``(tokens,)`` is the
    object under each token (-1: background, -2: padding, a token that sees no pixel of
    the image), in the flat token order of the site
    (:class:`caches.SiteTokens`; a dense ``(n, tokens)`` array is flattened).
    """

    image: dict[str, np.ndarray]
    objects: dict[str, np.ndarray]
    token_objects: np.ndarray

    def __post_init__(self) -> None:
        self.token_objects = np.asarray(self.token_objects).reshape(-1)


@dataclass
class Design:
    """The samples of one selection: ``X (m, d)``, the image of each sample ``groups
    (m,)``, ``labels`` per attribute ``(m,)``, and ``units`` per attribute ``(m,)``:
    the samples that must share a control label (one object of one image, or one
    image); ``rows``, for samples that are single tokens, each one's row among the
    site's flat tokens (None for pooled samples)."""

    X: np.ndarray
    groups: np.ndarray
    labels: dict[str, np.ndarray]
    units: dict[str, np.ndarray]
    rows: np.ndarray | None = None


def _pooled(tokens: SiteTokens, weights: np.ndarray) -> np.ndarray:
    """``sum_t weights[t] * values[t]`` over each image's tokens: ``(n, d)`` float32.
    A sparse ``(n, tokens)`` matrix times the values, so no token-sized copy is made."""
    matrix = sparse.csr_matrix(
        (weights.astype(np.float32), np.arange(len(weights)), tokens.offsets),
        shape=(tokens.n_images, len(weights)),
    )
    return np.asarray(matrix @ tokens.values, dtype=np.float32)


def _first_per_image(
    tokens: SiteTokens, eligible: np.ndarray, k: int | None, stream: list[int]
) -> np.ndarray:
    """``(tokens,)`` bool: per image, ``k`` of its ``eligible`` tokens drawn at random
    (seeded by ``stream``; None: all of them)."""
    if k is None:
        return eligible.copy()
    rank = np.random.default_rng(stream).random(len(eligible))  # one draw per token
    rank[~eligible] = np.inf
    image = tokens.image_of  # (tokens,)
    order = np.lexsort((rank, image))  # by image, then rank
    place = np.empty(len(order), dtype=np.int64)
    place[order] = np.arange(len(order)) - tokens.offsets[image[order]]  # rank in its image
    return eligible & (place < k)


def select(
    tokens: SiteTokens,
    labels: SiteLabels,
    selection: str,
    attributes: list[str],
    seed: int = 0,
    tokens_per_image: int | None = None,
) -> Design:
    """The samples of ``selection`` (see the module doc) from one site's ``tokens``
    (flat float32 values and per-image offsets; :meth:`SiteTokens.from_dense` wraps an
    ``(n, tokens, d)`` array). ``tokens_per_image`` caps the ``token`` selection's
    samples per image (a seeded random subset of its object tokens; None: all)."""
    n = tokens.n_images
    images = np.arange(n)
    if selection == "token":
        chosen = np.flatnonzero(
            _first_per_image(tokens, labels.token_objects >= 0, tokens_per_image, [seed, 0])
        )
        image = tokens.image_of[chosen]
        obj = labels.token_objects[chosen].astype(np.int64)
        X = tokens.values[chosen]  # (m, d)
        per_object = {}
        units = {}
        for attribute in attributes:
            if attribute in labels.objects:
                per_object[attribute] = labels.objects[attribute][image, obj]
                units[attribute] = image * labels.objects[attribute].shape[1] + obj
            else:  # an image-level attribute: every token of the image shares it
                per_object[attribute] = labels.image[attribute][image]
                units[attribute] = image
        return Design(X=X, groups=image, labels=per_object, units=units, rows=chosen)

    if selection == "mean":
        weights = np.ones(len(tokens.values), dtype=np.float32)
    elif selection in ("on_object", "off_object"):
        weights = (labels.token_objects == (0 if selection == "on_object" else -1)).astype(
            np.float32
        )
    elif _RANDOM.match(check_selection(selection)):
        k = int(selection.removeprefix("random_"))
        check_selection_fits(selection, int(tokens.counts.min()) if n else 0, "at this site")
        every = np.ones(len(tokens.values), dtype=bool)
        weights = _first_per_image(tokens, every, k, [seed, k]).astype(np.float32)
    image_of = tokens.image_of
    counts = np.bincount(image_of, weights, minlength=n)  # (n,) selected tokens per image
    keep = counts > 0  # an image with no such token has no sample
    per_token = weights / np.maximum(counts, 1)[image_of]
    X = _pooled(tokens, per_token)[keep]
    return Design(
        X=X,
        groups=images[keep],
        labels={a: labels.image[a][keep] for a in attributes},
        units={a: images[keep] for a in attributes},
    )
