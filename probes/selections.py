"""Token selections: which visual tokens of a site a probe reads, and with which labels.

- ``mean``: all tokens, mean-pooled; one sample per image, labels of the image's first
  object (and its object count).
- ``on_object`` / ``off_object``: the mean of the tokens whose patch the first object
  covers / that no object covers: is the information where the object is drawn, or has
  it spread to the background tokens?
- ``token``: every token that an object covers, on its own, labelled with *that*
  object's attributes (the image's count for ``count``); one sample per token, grouped
  by image for cross-validation.
- ``random_<k>``: the mean of ``k`` tokens drawn at random per image (seeded): how many
  tokens does a probe need? Over ``k = 1, 8, 64, ...`` (any ``k`` can be asked for) this
  is a redundancy curve; ``k`` = every token is the ``mean`` selection.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from interp.errors import ConfigError

__all__ = [
    "SELECTIONS",
    "Design",
    "SiteLabels",
    "check_selection",
    "default_selections",
    "random_ks",
    "select",
]

SELECTIONS: tuple[str, ...] = ("mean", "on_object", "off_object", "token", "random_<k>")
_RANDOM = re.compile(r"^random_(\d+)$")


def check_selection(selection: str) -> str:
    """``selection`` if it names a token selection, else a ConfigError saying which do."""
    if selection in SELECTIONS[:-1] or _RANDOM.match(selection):
        return selection
    raise ConfigError(
        f"unknown token selection {selection!r}; expected one of {', '.join(SELECTIONS)} "
        f"(e.g. random_4)"
    )


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
    max objects)`` classes (-1: no such object); ``token_objects`` ``(n, tokens)`` is the
    object under each token (-1: background), in the token order of the site arrays.
    """

    image: dict[str, np.ndarray]
    objects: dict[str, np.ndarray]
    token_objects: np.ndarray

    @property
    def n_images(self) -> int:
        return len(self.token_objects)


@dataclass
class Design:
    """The samples of one selection: ``X (m, d)``, the image of each sample ``groups
    (m,)``, ``labels`` per attribute ``(m,)``, and ``units`` per attribute ``(m,)``:
    the samples that must share a control label (one object of one image, or one
    image)."""

    X: np.ndarray
    groups: np.ndarray
    labels: dict[str, np.ndarray]
    units: dict[str, np.ndarray]


def _pooled(acts: np.ndarray, weights: np.ndarray, chunk: int = 256) -> np.ndarray:
    """``sum_t weights[i, t] * acts[i, t]`` per image, a chunk of images at a time, so
    no token-sized copy of ``acts`` is made. ``acts (n, T, d)``, ``weights (n, T)``."""
    out = np.empty((len(acts), acts.shape[-1]), dtype=np.float32)
    for start in range(0, len(acts), chunk):
        block = slice(start, start + chunk)
        out[block] = np.matmul(weights[block, None, :], acts[block])[:, 0]  # (chunk, d)
    return out


def _object_tokens(token_objects: np.ndarray, per_image: int | None, seed: int):
    """``(image, token)`` indices of object-covered tokens, at most ``per_image`` of each
    image (a seeded random subset), in image order."""
    covered = token_objects >= 0  # (n, tokens)
    if per_image is not None:
        rank = np.random.default_rng([seed, 0]).random(covered.shape)
        rank[~covered] = np.inf
        keep = np.argsort(rank, axis=1)[:, :per_image]  # (n, per_image)
        chosen = np.zeros_like(covered)
        np.put_along_axis(chosen, keep, True, axis=1)
        covered &= chosen
    return np.nonzero(covered)


def select(
    acts: np.ndarray,
    labels: SiteLabels,
    selection: str,
    attributes: list[str],
    seed: int = 0,
    tokens_per_image: int | None = None,
) -> Design:
    """The samples of ``selection`` (see the module doc) from one site's ``acts``
    ``(n, tokens, d)`` float32. ``tokens_per_image`` caps the ``token`` selection's
    samples per image (a seeded random subset of its object tokens; None: all)."""
    n, n_tokens, _ = acts.shape
    images = np.arange(n)
    if selection == "token":
        image, token = _object_tokens(labels.token_objects, tokens_per_image, seed)
        obj = labels.token_objects[image, token].astype(np.int64)
        X = acts[image, token]  # (m, d)
        per_object = {}
        units = {}
        for attribute in attributes:
            if attribute in labels.objects:
                per_object[attribute] = labels.objects[attribute][image, obj]
                units[attribute] = image * labels.objects[attribute].shape[1] + obj
            else:  # an image-level attribute: every token of the image shares it
                per_object[attribute] = labels.image[attribute][image]
                units[attribute] = image
        return Design(X=X, groups=image, labels=per_object, units=units)

    if selection == "mean":
        weights = np.ones((n, n_tokens), dtype=np.float32)
    elif selection in ("on_object", "off_object"):
        weights = (labels.token_objects == (0 if selection == "on_object" else -1)).astype(
            np.float32
        )
    elif _RANDOM.match(check_selection(selection)):
        k = int(selection.removeprefix("random_"))
        if not 1 <= k <= n_tokens:
            raise ConfigError(f"selection {selection!r} needs 1 <= k <= {n_tokens} tokens")
        rng = np.random.default_rng([seed, k])
        chosen = np.argsort(rng.random((n, n_tokens)), axis=1)[:, :k]  # (n, k)
        weights = np.zeros((n, n_tokens), dtype=np.float32)
        np.put_along_axis(weights, chosen, 1.0, axis=1)
    counts = weights.sum(1)
    keep = counts > 0  # an image with no such token has no sample
    X = _pooled(acts, weights / np.maximum(counts, 1)[:, None])[keep]
    return Design(
        X=X,
        groups=images[keep],
        labels={a: labels.image[a][keep] for a in attributes},
        units={a: images[keep] for a in attributes},
    )
