"""Attention to the image: from a text position (by default the one the answer is read
at, each prompt's last) to every patch token, per LM layer and head, on the patch grid.

The weights are what each layer's self-attention module returns beside its output; only
eager attention computes them (SDPA and flash kernels never form the matrix), so a model
must be loaded with ``attn_implementation="eager"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from interp.errors import ConfigError
from interp.layout import image_hw
from interp.models.loading import LoadedModel
from interp.models.tracing import Action, capture_tokens

__all__ = ["ATTENTION_COLUMNS", "attention_records", "attention_table", "attention_to_image"]

ATTENTION_COLUMNS: tuple[str, ...] = (
    "condition", "image", "layer", "head", "token", "crop", "row", "col",
    "y0", "x0", "y1", "x1", "weight",
)  # fmt: skip


def _query_rows(inputs: dict[str, torch.Tensor], query: int | None) -> torch.Tensor:
    """``(batch,)`` the query position of each row: ``query`` (negative: from the end of
    the row's real tokens), or each row's last real token."""
    ids = inputs["input_ids"]  # (batch, seq)
    mask = inputs.get("attention_mask")
    mask = torch.ones_like(ids) if mask is None else mask
    seq = torch.arange(ids.shape[1])
    last = (seq * (mask.cpu() != 0)).amax(1)  # (batch,)
    first = (torch.where(mask.cpu() != 0, seq, ids.shape[1])).amin(1)
    if query is None:
        return last
    lengths = last + 1 - first  # (batch,) real tokens of each prompt
    shortest = int(lengths.min())
    if not -shortest <= query < shortest:
        raise ConfigError(
            f"query={query} is no position of the prompt, which has {shortest} tokens; "
            f"pass an index from 0 to {shortest - 1}, or from -{shortest} (negative: from "
            f"its end)"
        )
    return last + 1 + query if query < 0 else first + query


def attention_to_image(
    loaded: LoadedModel,
    images: np.ndarray,
    *,
    prompt: str | Sequence[str],
    layers: Sequence[int] | None = None,
    query: int | None = None,
    intervention: Any | None = None,
) -> torch.Tensor:
    """``(batch, layers, heads, tokens)`` float32: the attention weight from the query
    position (``query``: an index into each prompt's tokens, negative from its end;
    default its last token, where the answer is read) to each patch token, in the order
    of the ``lm.*`` token layout, in LM ``layers`` (default all), under
    ``intervention`` (e.g. ``make_intervention("shuffle")``; None: the model as it is)."""
    adapter = loaded.adapter
    if not adapter.has_language_model:
        raise ConfigError(f"a {adapter.family} encoder has no text to attend from")
    if adapter.attention_implementation != "eager":
        raise ConfigError(
            f"attention weights need eager attention, this model uses "
            f"{adapter.attention_implementation!r}; load it with attn_implementation='eager'"
        )
    chosen = list(range(adapter.n_lm_layers)) if layers is None else [int(i) for i in layers]
    bad = [i for i in chosen if not 0 <= i < adapter.n_lm_layers]
    if bad:
        raise ConfigError(
            f"layers {bad} are not LM layers of this model: it has 0 to {adapter.n_lm_layers - 1}"
        )
    inputs = adapter.build_inputs(images, prompt)
    records = attention_records(loaded, inputs, chosen, query=query)
    found = capture_tokens(
        loaded,
        images,
        [],
        prompt=prompt,
        intervention=intervention,
        records=records,
        extra=False,
        inputs=inputs,
    ).records
    return torch.stack([found[f"attention.{i}"] for i in chosen], dim=1)


def attention_records(
    loaded: LoadedModel,
    inputs: dict[str, torch.Tensor],
    layers: Sequence[int],
    *,
    query: int | None = None,
) -> list[Action]:
    """The recordings of a capture (``capture_tokens(..., records=...)``) that read the
    attention from the query position to each patch token of LM ``layers``: one
    ``attention.<i>`` each, ``(batch, heads, tokens)``, for the processor ``inputs`` of the
    batch. The model must be loaded with eager attention (:func:`attention_to_image`
    checks it)."""
    adapter = loaded.adapter
    patch = adapter.token_positions(inputs).patch  # (batch, tokens)
    rows = _query_rows(inputs, query)  # (batch,)
    batch = torch.arange(len(rows))

    def weights_at_patches(value: Any) -> torch.Tensor:
        weights = value[1] if isinstance(value, (tuple, list)) and len(value) > 1 else None
        if weights is None:
            raise ConfigError(
                "the attention module returned no weights; load the model with "
                "attn_implementation='eager'"
            )
        device = weights.device
        from_query = weights[batch.to(device), :, rows.to(device)]  # (batch, heads, seq)
        index = patch.to(device)[:, None, :].expand(-1, from_query.shape[1], -1)
        return from_query.gather(2, index)  # (batch, heads, tokens)

    return [
        Action(adapter.attention_path(i), "output", site=f"attention.{i}", read=weights_at_patches)
        for i in layers
    ]


def attention_table(
    loaded: LoadedModel,
    weights: torch.Tensor,
    image_size: int | tuple[int, int],
    *,
    layers: Sequence[int] | None = None,
    condition: str = "baseline",
) -> pd.DataFrame:
    """``weights`` ``(batch, layers, heads, tokens)`` as a tidy table (columns
    :data:`ATTENTION_COLUMNS`), each token on its crop, grid cell and pixel box."""
    layout = loaded.adapter.token_layout("lm.0", image_hw(image_size))
    n, n_layers, n_heads, n_tokens = weights.shape
    layers = list(range(n_layers)) if layers is None else list(layers)
    image, layer, head, token = np.meshgrid(
        np.arange(n), layers, np.arange(n_heads), np.arange(n_tokens), indexing="ij"
    )
    token = token.reshape(-1)
    return pd.DataFrame(
        {
            "condition": condition,
            "image": image.reshape(-1),
            "layer": layer.reshape(-1),
            "head": head.reshape(-1),
            "token": token,
            "crop": layout.crops[token],
            "row": layout.grid[token, 0],
            "col": layout.grid[token, 1],
            **{name: layout.boxes[token, k] for k, name in enumerate(("y0", "x0", "y1", "x1"))},
            "weight": weights.numpy().reshape(-1),
        },
        columns=list(ATTENTION_COLUMNS),
    )
