"""Captured values equal an independent reference: plain torch hooks and output_hidden_states."""

from __future__ import annotations

import pytest
import torch
from conftest import hook_state
from transformers import AutoModelForImageTextToText

from interp import SiteError, capture, load_model
from interp.models.tracing import Action


def _reference(folder: str, inputs: dict, hook_paths: dict[str, str]):
    """A fresh, un-wrapped copy of the model, run with plain forward hooks."""
    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    modules = dict(model.named_modules())
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for site, path in hook_paths.items():

        def hook(_m, _i, out, site=site):
            seen[site] = (out[0] if isinstance(out, tuple) else out).detach().clone()

        handles.append(modules[path].register_forward_hook(hook))
    try:
        with torch.no_grad():
            out = model(**inputs, output_hidden_states=True)
            vision = model.model.vision_tower(inputs["pixel_values"], output_hidden_states=True)
    finally:
        for h in handles:
            h.remove()
    return seen, out.hidden_states, vision.hidden_states


def test_capture_equals_torch_hooks_and_hidden_states(loaded, tiny_dir, stimuli, prompt) -> None:
    adapter = loaded.adapter
    sites = adapter.sites()
    got = capture(loaded, stimuli.images, sites, prompt=prompt)
    inputs = adapter.build_inputs(stimuli.images, prompt)
    positions = adapter.image_token_positions(inputs["input_ids"])  # (batch, tokens)
    hooks, lm_hidden, vision_hidden = _reference(
        tiny_dir, inputs, {s: adapter.module_path(s) for s in sites}
    )
    rows = torch.arange(len(stimuli.images))[:, None]
    n_tokens = adapter.patch_grid[0] * adapter.patch_grid[1]
    for site in sites:
        ref = hooks[site]
        if site.startswith("vision."):
            ref = ref[:, 1:]  # CLS dropped
        elif site.startswith("lm."):
            ref = ref[rows, positions]
        assert got[site].shape == (len(stimuli.images), n_tokens, ref.shape[-1]), site
        torch.testing.assert_close(got[site], ref, rtol=0, atol=0, msg=site)
    # output_hidden_states: index i + 1 is the output of layer i.
    for i in range(adapter.n_vision_layers):
        torch.testing.assert_close(got[f"vision.{i}"], vision_hidden[i + 1][:, 1:])
    for i in range(adapter.n_lm_layers - 1):  # the last entry is after the final norm
        torch.testing.assert_close(got[f"lm.{i}"], lm_hidden[i + 1][rows, positions])
    # Image tokens are in patch order: the token grid is row-major over the patch grid.
    grid = adapter.token_layout("lm.0", 64).grid
    assert grid.shape == (n_tokens, 2)
    assert (grid[1] == [0, 1]).all() and (grid[adapter.patch_grid[1]] == [1, 0]).all()


def test_full_strategy_and_plain_prompt(plain_dir) -> None:
    """Without a chat template the prompt is plain; with 'full', the CLS token is dropped."""
    from interp import StimulusSpec, generate

    model = load_model(plain_dir)
    prompt = model.adapter.default_prompt("What color is the object?")
    assert prompt == "<image>\nWhat color is the object?"
    images = generate(StimulusSpec(n_images=3, image_size=32)).images
    got = capture(model, images, ["vision.3", "projector", "lm.0"], prompt=prompt)
    assert {v.shape[1] for v in got.values()} == {16}  # 4x4 patches, CLS dropped everywhere
    inputs = model.adapter.build_inputs(images, prompt)
    hooks, _, _ = _reference(
        plain_dir, inputs, {"projector": model.adapter.module_path("projector")}
    )
    torch.testing.assert_close(got["projector"], hooks["projector"][:, 1:], rtol=0, atol=0)


def test_a_raising_trace_leaves_nothing_attached(loaded, stimuli, prompt) -> None:
    baseline = capture(loaded, stimuli.images, ["projector", "lm.2"], prompt=prompt)
    # After one clean forward: some transformers releases (5.17) attach their own output
    # recorders on a model's first call and keep them.
    before_hooks = hook_state(loaded.model)

    class Boom:
        def actions(self, adapter, inputs, context=None):
            def explode(value):
                raise RuntimeError("boom inside the trace")

            return [Action(adapter.module_path("lm.1"), "output", edit=explode)]

    with pytest.raises(RuntimeError, match="boom inside the trace"):
        capture(loaded, stimuli.images, ["projector", "lm.2"], prompt=prompt, intervention=Boom())
    assert hook_state(loaded.model) == before_hooks
    again = capture(loaded, stimuli.images, ["projector", "lm.2"], prompt=prompt)
    for site in baseline:
        torch.testing.assert_close(again[site], baseline[site], rtol=0, atol=0)
    # A plain call of the model is unaffected too.
    inputs = loaded.adapter.build_inputs(stimuli.images, prompt)
    with torch.no_grad():
        logits = loaded.model(**inputs).logits
    fresh = AutoModelForImageTextToText.from_pretrained(loaded.source).eval()
    with torch.no_grad():
        torch.testing.assert_close(logits, fresh(**inputs).logits, rtol=0, atol=0)


def test_unknown_site_lists_the_valid_ones(loaded, stimuli, prompt) -> None:
    with pytest.raises(SiteError, match=r"unknown site 'lm\.99'.*vision\.0, .*projector.*lm\.7"):
        capture(loaded, stimuli.images, ["lm.99"], prompt=prompt)
    with pytest.raises(SiteError, match="malformed site name"):
        capture(loaded, stimuli.images, ["layer3"], prompt=prompt)


def test_prompt_must_hold_the_image_token_once(loaded, stimuli) -> None:
    from interp import ConfigError

    for prompt in ("<image> <image> two images", "no image token"):
        with pytest.raises(ConfigError, match="image token '<image>' exactly once"):
            capture(loaded, stimuli.images, ["lm.0"], prompt=prompt)


def test_a_capture_stops_the_model_after_its_last_site(loaded, stimuli, prompt) -> None:
    """Nothing after the last site it needs runs (a plain hook on a later layer is never
    called), and what it records is what a full pass records."""
    later = loaded.model.get_submodule(loaded.adapter.module_path("lm.4"))
    calls = []
    handle = later.register_forward_hook(lambda *args: calls.append(1))
    try:
        early = capture(loaded, stimuli.images, ["vision.1", "lm.2"], prompt=prompt)
    finally:
        handle.remove()
    assert calls == []
    full = capture(loaded, stimuli.images, loaded.adapter.sites(), prompt=prompt)
    for site in ("vision.1", "lm.2"):
        torch.testing.assert_close(early[site], full[site], rtol=0, atol=0)
