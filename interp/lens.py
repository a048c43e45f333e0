"""The logit lens on visual tokens: each image token's residual stream at an LM layer,
read through the model's final norm and unembedding, as if the model stopped there.

At the last LM layer this is the model's own logits at the image-token positions (a
test checks it), so a word's rank at earlier layers says how far the layer's image token
already points at that word (e.g. the object's colour name at the tokens on the object).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from interp.adapters.base import find_first_module
from interp.errors import ConfigError
from interp.loading import LoadedModel
from interp.sites import parse_site
from interp.tracing import capture_tokens

__all__ = ["lens_logits", "word_ranks"]


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
    norm, head = _readout(loaded)
    parameter = next(head.parameters())
    with torch.no_grad():
        states = hidden.to(parameter.device, parameter.dtype)  # (batch, tokens, d)
        return head(norm(states)).float().cpu()  # (batch, tokens, vocab)


def word_ranks(logits: torch.Tensor, token_ids: Sequence[int]) -> torch.Tensor:
    """``(..., len(token_ids))`` rank of each token id among the vocabulary at each
    position of ``logits`` ``(..., vocab)`` (0 = the most likely)."""
    ids = torch.as_tensor(list(token_ids), dtype=torch.long)
    chosen = logits[..., ids]  # (..., words)
    return (logits[..., None, :] > chosen[..., None]).sum(-1)
