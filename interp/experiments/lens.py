"""The logit lens on visual tokens: each image token's residual stream at an LM layer,
read through the model's final norm and unembedding, as if the model stopped there.

At the last LM layer this is the model's own logits at the image-token positions (a
test checks it), so a word's rank at earlier layers says how far the layer's image token
already points at that word (e.g. the object's colour name at the tokens on the object).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from interp.adapters.base import find_first_module
from interp.errors import ConfigError
from interp.layout import box_label_map
from interp.models.loading import LoadedModel
from interp.models.tracing import capture_tokens
from interp.sites import parse_site
from interp.sources import ImageSet

__all__ = [
    "LENS_COLUMNS", "class_word_ids", "direction_words", "lens_logits", "lens_summary",
    "lens_table", "read_out", "word_ranks",
]  # fmt: skip


def _readout(loaded: LoadedModel) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The LM's final norm and its unembedding, from the model's own module tree."""
    adapter = loaded.adapter
    if not adapter.has_language_model:
        raise ConfigError(f"a {adapter.family} encoder has no language model to read out")
    lm = adapter.lm_input_path()
    model = loaded.model
    norm = find_first_module(model, (f"{lm}.norm", f"{lm}.model.norm", f"{lm}.final_layernorm"))
    head = find_first_module(model, ("lm_head", f"{lm}.lm_head"))
    return model.get_submodule(norm), model.get_submodule(head)


def lens_logits(loaded: LoadedModel, images: np.ndarray, site: str, *, prompt: str) -> torch.Tensor:
    """``(batch, tokens, vocab)`` float32: the image tokens of the LM ``site``
    (``lm.<i>``, in the order of its token layout) through the final norm and the
    unembedding."""
    site = loaded.adapter.check_site(site)
    if parse_site(site).stage != "lm":
        raise ConfigError(f"the logit lens reads LM sites (lm.<i>), got {site!r}")
    hidden = capture_tokens(loaded, images, [site], prompt=prompt, extra=False).acts[site]
    return read_out(loaded, hidden)


def read_out(loaded: LoadedModel, hidden: torch.Tensor) -> torch.Tensor:
    """``(..., vocab)`` float32 on the CPU: residual-stream states ``(..., d)`` (an LM
    site's tokens, captured) through the LM's final norm and unembedding, on the model's
    device."""
    norm, head = _readout(loaded)
    parameter = next(head.parameters())
    with torch.no_grad():
        states = hidden.to(parameter.device, parameter.dtype)  # (..., d)
        return head(norm(states)).float().cpu()  # (..., vocab)


def lens_summary(
    loaded: LoadedModel, hidden: torch.Tensor, top: int, targets: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The logit lens of one image's tokens at an LM site, reduced where the model is (a
    7B model's vocabulary read out at every token would be tens of MB per image and site):
    ``hidden`` ``(tokens, d)``; ``targets`` name -> ``(tokens,)`` the token id whose rank
    to find at each token (-1: none). Returns the ``top`` most likely token ids ``(tokens,
    top)`` and, per target, ``(tokens,)`` float64 ranks counted from 1 (NaN where -1), on
    the CPU (as :func:`word_ranks` counts them)."""
    norm, head = _readout(loaded)
    parameter = next(head.parameters())
    with torch.no_grad():
        logits = head(norm(hidden.to(parameter.device, parameter.dtype))).float()
        best = torch.topk(logits, min(top, logits.shape[-1]), dim=-1).indices.cpu()
        ranks = {}
        for name, ids in targets.items():
            ids = ids.to(logits.device)
            chosen = logits.gather(1, ids.clamp(min=0)[:, None])  # (tokens, 1)
            rank = ((logits > chosen).sum(-1) + 1).double()
            ranks[name] = torch.where(ids >= 0, rank, torch.nan).cpu()
    return best, ranks


def direction_words(
    loaded: LoadedModel, directions: torch.Tensor, top: int = 10
) -> list[list[str]]:
    """The words each direction of the residual stream promotes: ``directions`` ``(n,
    d)`` (e.g. an SAE's decoder rows at an LM site) through the final norm and the
    unembedding, as the logit lens reads a token; the ``top`` words of each, most
    promoted first."""
    norm, head = _readout(loaded)
    parameter = next(head.parameters())
    with torch.no_grad():
        logits = head(norm(directions.to(parameter.device, parameter.dtype))).float()
    best = torch.topk(logits, min(top, logits.shape[-1]), dim=-1).indices.cpu()  # (n, top)
    tokenizer = getattr(loaded.processor, "tokenizer", loaded.processor)
    return [tokenizer.convert_ids_to_tokens(row.tolist()) for row in best]


def word_ranks(logits: torch.Tensor, token_ids: Sequence[int]) -> torch.Tensor:
    """``(..., len(token_ids))`` rank of each token id among the vocabulary at each
    position of ``logits`` ``(..., vocab)``, counted from 1 (1 = the most likely: the
    number of tokens at least as likely, ties in its favour)."""
    ids = torch.as_tensor(list(token_ids), dtype=torch.long)
    chosen = logits[..., ids]  # (..., words)
    return (logits[..., None, :] > chosen[..., None]).sum(-1) + 1


def class_word_ids(
    loaded: LoadedModel, data: ImageSet, attributes: Sequence[str] | None = None
) -> tuple[dict[str, list[int]], dict[str, ConfigError]]:
    """Per categorical attribute (``attributes``, default every one of ``data``'s): the
    token id of each class word, by its first token (as answers are scored); and the
    attributes left out, each with why (class words that are no token, or that share a
    first token)."""
    from interp.experiments.answers import answer_token_ids

    tokenizer = loaded.processor.tokenizer
    words: dict[str, list[int]] = {}
    left_out: dict[str, ConfigError] = {}
    for attribute in attributes or data.label_classes:
        classes = list(data.label_classes[attribute])
        try:
            ids = answer_token_ids(tokenizer, classes, f"class words of {attribute!r}")
        except ConfigError as err:
            left_out[attribute] = err
            continue
        words[attribute] = [ids[c] for c in classes]
    return words, left_out


LENS_COLUMNS: tuple[str, ...] = (
    "site", "attribute", "tokens", "median_rank", "mean_log_rank", "top1", "top10", "n",
)  # fmt: skip


def lens_table(
    loaded: LoadedModel,
    data: ImageSet,
    *,
    attributes: Sequence[str] | None = None,
    sites: Sequence[str] | None = None,
    prompt: str,
    batch_size: int = 32,
) -> pd.DataFrame:
    """The logit lens on the tokens over the first object: per LM site and categorical
    attribute, the rank of the image's class word (e.g. the first object's colour name)
    among the vocabulary at the tokens over that object (``tokens`` ``on_object``) and,
    as a control, at the background tokens (``off_object``): median rank (counted from 1:
    rank 1 is the most likely word), mean log10(rank), the share ranked first and in the
    top ten, and the number of tokens.

    Class words are scored by their first token
    (:func:`interp.experiments.answers.answer_token_ids`); an attribute whose class words share
    first tokens is refused when named, and left out
    (with a warning) when ``attributes`` is None (every categorical label)."""

    adapter = loaded.adapter
    sites = [adapter.check_site(s) for s in sites or adapter.sites() if s.startswith("lm.")]
    if not sites:
        raise ConfigError("the logit lens reads LM sites (lm.<i>); name at least one")
    for attribute in attributes or ():
        if attribute not in data.label_classes:
            raise ConfigError(
                f"attribute {attribute!r} is not a categorical label of the data; its "
                f"categorical labels: {', '.join(data.label_classes)}"
            )
    words, left_out = class_word_ids(loaded, data, attributes)
    for attribute, err in left_out.items():
        if attributes is not None:
            raise err
        warnings.warn(f"logit lens: {attribute!r} left out: {err}", stacklevel=2)
    attributes = list(words)
    if not attributes:
        raise ConfigError("no attribute's class words are distinct tokens of this model")
    ranks: dict[tuple[str, str, str], list[np.ndarray]] = {}
    for start in range(0, len(data), batch_size):
        index = np.arange(start, min(len(data), start + batch_size))
        for size in {tuple(int(v) for v in data.sizes[i]) for i in index}:
            members = [i for i in index if tuple(int(v) for v in data.sizes[i]) == size]
            images = data.crops(members)  # one size: (k, H, W, 3)
            layout = adapter.token_layout(sites[0], size)
            over = box_label_map(np.stack(data.crop_maps(members)), layout.boxes)  # (k, tokens)
            for site in sites:
                logits = lens_logits(loaded, images, site, prompt=prompt)  # (k, tokens, vocab)
                for attribute in attributes:
                    label = data.labels[attribute][members]  # (k,) class index, -1 missing
                    known = label >= 0
                    target = torch.as_tensor(np.asarray(words[attribute])[label.clip(0)])
                    chosen = logits.gather(2, target[:, None, None].expand(-1, logits.shape[1], 1))
                    rank = (logits > chosen).sum(-1).numpy() + 1  # (k, tokens); 1 = top
                    for where, mask in (("on_object", over == 0), ("off_object", over == -1)):
                        values = rank[known[:, None] & mask]
                        ranks.setdefault((site, attribute, where), []).append(values)
    rows = []
    for (site, attribute, where), parts in ranks.items():
        values = np.concatenate(parts)
        rows.append(
            {
                "site": site, "attribute": attribute, "tokens": where,
                "median_rank": float(np.median(values)) if len(values) else np.nan,
                "mean_log_rank": float(np.log10(values).mean()) if len(values) else np.nan,
                "top1": float((values == 1).mean()) if len(values) else np.nan,
                "top10": float((values <= 10).mean()) if len(values) else np.nan,
                "n": len(values),
            }
        )  # fmt: skip
    return pd.DataFrame(rows, columns=list(LENS_COLUMNS))
