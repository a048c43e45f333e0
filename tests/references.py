"""Independent references for the family tests: plain torch hooks on a separately loaded
copy of a saved model, and the checks every VLM family must pass."""

from __future__ import annotations

import numpy as np
import torch
from transformers import AutoModelForImageTextToText

from interp import LowerLayerMask, ShufflePatches, capture_tokens


def hooked_forward(
    folder: str, inputs: dict, paths: dict[str, str], lm_input: str | None = None
) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """Load ``folder`` afresh, run ``inputs`` with a forward hook on each of ``paths``
    (name -> module path; the output's first tensor is kept) and, with ``lm_input``, a
    pre-hook on that module keeping what it receives (under ``"lm_input"``)."""
    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    modules = dict(model.named_modules())
    seen: dict[str, torch.Tensor] = {}
    handles = [
        modules[path].register_forward_hook(
            lambda _m, _i, out, name=name: seen.__setitem__(
                name, out[0] if isinstance(out, tuple) else out
            )
        )
        for name, path in paths.items()
    ]
    if lm_input is not None:
        handles.append(
            modules[lm_input].register_forward_pre_hook(
                lambda _m, args, kwargs: seen.__setitem__(
                    "lm_input", args[0] if args else kwargs["hidden_states"]
                ),
                with_kwargs=True,
            )
        )
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        for h in handles:
            h.remove()
    return model, seen


def capture_beside_hooks(loaded, folder: str, images: np.ndarray) -> tuple:
    """``capture_tokens`` at every site of a saved VLM, and :func:`hooked_forward` of a
    fresh copy on the same processor inputs (the LLM's input kept as ``"lm_input"``):
    ``(captured, inputs, model, seen)``."""
    adapter = loaded.adapter
    prompt = adapter.default_prompt("Describe the image.")
    captured = capture_tokens(loaded, images, adapter.sites(), prompt=prompt)
    inputs = adapter.build_inputs(images, prompt)
    paths = {site: adapter.module_path(site) for site in adapter.sites()}
    model, seen = hooked_forward(folder, inputs, paths, lm_input=paths["lm.0"])
    return captured, inputs, model, seen


def token_change(loaded, image: np.ndarray, box, site: str, prompt: str) -> np.ndarray:
    """``(tokens,)`` how much each token of ``site`` moves when the pixels of ``box``
    ``(y0, x0, y1, x1)`` are repainted."""
    y0, x0, y1, x1 = (int(v) for v in box)
    edited = image.copy()
    edited[y0:y1, x0:x1] = (10, 200, 90)
    both = capture_tokens(loaded, np.stack([image, edited]), [site], prompt=prompt)
    return (both.acts[site][1] - both.acts[site][0]).norm(dim=-1).numpy()


def assert_interventions_touch_the_llm_only(loaded, images: np.ndarray, prompt: str) -> None:
    """Both ablations leave the vision sites and the projector exactly as they were and
    change every LLM site."""
    sites = loaded.adapter.sites()
    base = capture_tokens(loaded, images, sites, prompt=prompt)
    for intervention in (ShufflePatches(seed=1), LowerLayerMask(fraction=0.5)):
        out = capture_tokens(loaded, images, sites, prompt=prompt, intervention=intervention)
        for site in sites:
            if site.startswith("lm."):
                assert (out.acts[site] - base.acts[site]).abs().max() > 1e-4, (intervention, site)
            else:
                torch.testing.assert_close(out.acts[site], base.acts[site], rtol=0, atol=0)
