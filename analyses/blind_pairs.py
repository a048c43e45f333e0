"""Blind pairs (MMVP, "Eyes Wide Shut"): images one encoder embeds almost alike while
another tells them apart.

:func:`mine_pairs` finds every pair ``i < j`` with ``cos_a > threshold_a`` and ``cos_b <
threshold_b``, a block of rows at a time: the ``n x n`` similarity matrix never exists
whole (one block is ``block x n``), and it runs on the GPU when there is one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from interp.errors import ConfigError

__all__ = ["PAIR_COLUMNS", "mine_pairs", "differing_attributes", "matched_pairs"]

PAIR_COLUMNS = ("i", "j", "cos_a", "cos_b")
_BLOCK_BYTES = 2**28  # one block of similarities: 256 MiB of float32


def _unit(values: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2 or not len(values):
        raise ConfigError(f"{name} must be (n_images, d) embeddings, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ConfigError(f"{name} holds values that are not finite; check the encoder")
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    return values / np.maximum(norms, 1e-12)


def mine_pairs(
    a: np.ndarray,
    b: np.ndarray,
    threshold_a: float = 0.95,
    threshold_b: float = 0.6,
    *,
    block: int | None = None,
    device: str | None = None,
) -> pd.DataFrame:
    """Every pair ``(i, j)``, ``i < j``, whose cosine similarity is above ``threshold_a``
    under the embeddings ``a`` ``(n, d_a)`` and below ``threshold_b`` under ``b`` ``(n,
    d_b)``: columns ``i, j, cos_a, cos_b``, most alike under ``a`` first. ``block`` rows
    of ``a`` are compared with every later row at a time (default: as many as fit in 256
    MiB); ``device``: a torch device (default: ``cuda`` when there is one)."""
    import torch

    if len(a) != len(b):
        raise ConfigError(f"a and b must embed the same images, got {len(a)} and {len(b)} rows")
    if not -1 <= threshold_b <= 1 or not -1 <= threshold_a <= 1:
        raise ConfigError(
            f"threshold_a and threshold_b are cosines in [-1, 1], got {threshold_a} and "
            f"{threshold_b}"
        )
    n = len(a)
    block = block or max(1, min(n, _BLOCK_BYTES // (4 * max(n, 1))))
    if block < 1:
        raise ConfigError(f"block must be >= 1, got {block}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    unit_a = torch.from_numpy(_unit(a, "a")).to(device)  # (n, d_a)
    unit_b = torch.from_numpy(_unit(b, "b")).to(device)  # (n, d_b)
    found: list[np.ndarray] = []
    for start in range(0, n, block):
        stop = min(n, start + block)
        sims = unit_a[start:stop] @ unit_a[start:].T  # (rows, n - start)
        rows = torch.arange(stop - start, device=device)[:, None]
        cols = torch.arange(n - start, device=device)[None, :]
        keep = (sims > threshold_a) & (cols > rows)  # j > i only
        r, c = torch.nonzero(keep, as_tuple=True)
        if not len(r):
            continue
        i, j = r + start, c + start
        cos_a = sims[r, c]
        cos_b = (unit_b[i] * unit_b[j]).sum(1)  # (pairs,)
        blind = cos_b < threshold_b
        part = torch.stack([i[blind].double(), j[blind].double(), cos_a[blind].double(),
                            cos_b[blind].double()], dim=1)  # fmt: skip
        found.append(part.cpu().numpy())
    values = np.concatenate(found) if found else np.zeros((0, 4))
    types = (np.int64, np.int64, np.float32, np.float32)  # typed even with no pair
    columns = zip(PAIR_COLUMNS, types, strict=True)
    table = pd.DataFrame(
        {name: values[:, k].astype(kind) for k, (name, kind) in enumerate(columns)}
    )
    order = np.lexsort((table["j"], table["i"], -table["cos_a"].to_numpy()))
    return table.iloc[order].reset_index(drop=True)


def differing_attributes(
    pairs: pd.DataFrame,
    labels: Mapping[str, np.ndarray],
    attributes: Sequence[str] | None = None,
) -> pd.Series:
    """For each pair, the labelled attributes whose values differ between its images,
    joined by ``;`` (empty where none does)."""
    names = list(attributes if attributes is not None else labels)
    i, j = pairs["i"].to_numpy(), pairs["j"].to_numpy()
    differs = {name: np.asarray(labels[name])[i] != np.asarray(labels[name])[j] for name in names}
    return pd.Series(
        [";".join(n for n in names if differs[n][k]) for k in range(len(pairs))],
        index=pairs.index,
        dtype=object,
    )


def matched_pairs(
    pairs: pd.DataFrame,
    labels: Mapping[str, np.ndarray],
    *,
    seed: int = 0,
    draws: int = 200_000,
    rounds: int = 50,
) -> pd.DataFrame:
    """For each pair of ``pairs``, a random other pair of the same images' set whose
    categorical ``labels`` differ in exactly the same attributes (the control of "are
    blind pairs harder than any pair that differs as they do?"): columns ``i, j,
    differs, matched_to`` (the row of ``pairs`` it matches). Random pairs are drawn
    ``draws`` at a time, at most ``rounds`` times (never the n x n pairs: 100k images
    work), each used once and never one of ``pairs``; a blind pair whose kind of
    difference none of the draws has gets no match."""
    names = list(labels)
    values = [np.asarray(labels[name]) for name in names]
    n = len(values[0]) if values else 0

    def codes(i: np.ndarray, j: np.ndarray) -> np.ndarray:  # which attributes differ, as bits
        out = np.zeros(len(i), dtype=np.int64)
        for bit, column in enumerate(values):
            out |= (column[i] != column[j]).astype(np.int64) << bit
        return out

    wanted = codes(pairs["i"].to_numpy(), pairs["j"].to_numpy())  # (pairs,)
    used = set(zip(pairs["i"].tolist(), pairs["j"].tolist(), strict=True))
    waiting: dict[int, list[int]] = {}
    for row, code in enumerate(wanted.tolist()):
        waiting.setdefault(code, []).append(row)
    rng = np.random.default_rng(seed)
    found: list[tuple[int, int, int]] = []
    for _ in range(rounds if n > 1 else 0):
        if not any(waiting.values()):
            break
        i, j = rng.integers(0, n, draws), rng.integers(0, n, draws)
        i, j = np.minimum(i, j), np.maximum(i, j)  # (draws,) each pair once, i < j
        drawn = np.unique((i * n + j)[i < j])  # distinct pairs, as one number each
        i, j = drawn // n, drawn % n
        kind = codes(i, j)  # (distinct,)
        for code, rows in waiting.items():
            for k in rng.permutation(np.flatnonzero(kind == code)) if rows else ():
                pair = (int(i[k]), int(j[k]))
                if pair not in used:
                    used.add(pair)
                    found.append((*pair, rows.pop(0)))
                    if not rows:
                        break
    found.sort(key=lambda row: row[2])
    table = pd.DataFrame(found, columns=["i", "j", "matched_to"], dtype=np.int64)
    table.insert(2, "differs", differing_attributes(table, labels, names))
    return table
