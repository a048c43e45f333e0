"""Each intervention changes what it must and nothing it must not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import hook_state

from interp import (
    ConfigError,
    InterventionError,
    LowerLayerMask,
    ShufflePatches,
    SiteError,
    StimulusSpec,
    capture,
    capture_tokens,
    generate,
    load_model,
    make_intervention,
)
from interp.experiments.interventions import knockout_mask


def _record_full_lm(loaded, layers: list[int]):
    """Plain forward hooks (outside nnsight) recording whole LM layer outputs."""
    modules = dict(loaded.model.named_modules())
    seen: dict[int, torch.Tensor] = {}
    handles = []
    for i in layers:

        def hook(_m, _i, out, i=i):
            seen[i] = (out[0] if isinstance(out, tuple) else out).detach().clone()

        handles.append(modules[loaded.adapter.module_path(f"lm.{i}")].register_forward_hook(hook))
    return seen, handles


def _lm_input(loaded, images, prompt, intervention=None) -> torch.Tensor:
    """What the first decoder layer receives (plain torch pre-hook): ``(batch, seq, d)``."""
    seen = {}
    layer = dict(loaded.model.named_modules())[loaded.adapter.module_path("lm.0")]

    def hook(_m, args, kwargs):
        seen["x"] = (args[0] if args else kwargs["hidden_states"]).detach().clone()

    handle = layer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        capture(loaded, images, ["lm.0"], prompt=prompt, intervention=intervention)
    finally:
        handle.remove()
    return seen["x"]


def test_shuffle_permutes_what_enters_the_llm_and_nothing_before(loaded, stimuli, prompt) -> None:
    adapter = loaded.adapter
    sites = adapter.sites()
    base = capture(loaded, stimuli.images, sites, prompt=prompt)
    shuffle = ShufflePatches(seed=5)
    shuffled = capture(loaded, stimuli.images, sites, prompt=prompt, intervention=shuffle)
    perm = torch.tensor(shuffle.describe(adapter, 64)["permutation"])
    assert sorted(perm.tolist()) == list(range(len(perm))) and not torch.equal(
        perm, torch.arange(len(perm))
    )
    for site in sites:
        if site.startswith("vision.") or site == "projector":
            torch.testing.assert_close(shuffled[site], base[site], rtol=0, atol=0)
        else:
            assert (shuffled[site] - base[site]).abs().max() > 1e-3, site
    # The LLM's input: patch token k now holds what patch perm[k] held; text unchanged.
    before = _lm_input(loaded, stimuli.images, prompt)
    after = _lm_input(loaded, stimuli.images, prompt, shuffle)
    inputs = adapter.build_inputs(stimuli.images, prompt)
    where = adapter.token_positions(inputs).patch[0]  # same positions in every row
    torch.testing.assert_close(after[:, where], before[:, where[perm]], rtol=0, atol=0)
    text = torch.ones(before.shape[1], dtype=torch.bool)
    text[where] = False
    torch.testing.assert_close(after[:, text], before[:, text], rtol=0, atol=0)
    # Same seed, same permutation; another seed, another one.
    assert ShufflePatches(5).describe(adapter, 64) == shuffle.describe(adapter, 64)
    assert ShufflePatches(6).describe(adapter, 64) != shuffle.describe(adapter, 64)


def test_lower_mask_cuts_image_to_text_flow_only_in_the_lower_layers(loaded, prompt) -> None:
    adapter = loaded.adapter
    mask = LowerLayerMask(fraction=0.25)
    lower = mask.layers(adapter)
    assert lower == [0, 1]  # 25% of 8 layers
    images_a = generate(StimulusSpec(n_images=2, seed=10)).images
    images_b = generate(StimulusSpec(n_images=2, seed=11)).images
    inputs = adapter.build_inputs(images_a, prompt)
    text = ~adapter.image_token_mask(inputs["input_ids"])[0]  # (seq,)

    runs = {}
    for name, images, intervention in [
        ("a", images_a, mask),
        ("b", images_b, mask),
        ("a_base", images_a, None),
        ("b_base", images_b, None),
    ]:
        seen, handles = _record_full_lm(loaded, list(range(adapter.n_lm_layers)))
        try:
            sites = capture(
                loaded, images, adapter.sites(), prompt=prompt, intervention=intervention
            )
        finally:
            for h in handles:
                h.remove()
        runs[name] = (seen, sites)

    last_image = int((~text).nonzero().max())
    after_image = [p for p in text.nonzero()[:, 0].tolist() if p > last_image]
    assert after_image  # the question and the assistant turn follow the image
    for i in lower:  # text after the image cannot see it: identical for different images
        torch.testing.assert_close(
            runs["a"][0][i][:, after_image], runs["b"][0][i][:, after_image], rtol=0, atol=1e-6
        )
        # ...whereas without the knockout it does see it.
        assert (
            runs["a_base"][0][i][:, after_image] - runs["b_base"][0][i][:, after_image]
        ).abs().max() > 1e-3
    above = lower[-1] + 1
    assert (
        runs["a"][0][above][:, after_image] - runs["b"][0][above][:, after_image]
    ).abs().max() > 1e-3
    # Vision sites and projector untouched; LM image tokens changed from the first layer.
    for site in adapter.sites():
        got, base = runs["a"][1][site], runs["a_base"][1][site]
        if site.startswith("lm."):
            assert (got - base).abs().max() > 1e-4, site
        else:
            torch.testing.assert_close(got, base, rtol=0, atol=0, msg=site)


def test_knockout_agrees_between_eager_and_sdpa(tiny_dir, stimuli, prompt) -> None:
    results = {}
    for implementation in ("eager", "sdpa"):
        model = load_model(tiny_dir, attn_implementation=implementation)
        assert model.adapter.attention_implementation == implementation
        results[implementation] = capture(
            model, stimuli.images, ["lm.0", "lm.7"], prompt=prompt, intervention=LowerLayerMask()
        )
    for site in ("lm.0", "lm.7"):
        torch.testing.assert_close(
            results["eager"][site], results["sdpa"][site], atol=1e-5, rtol=1e-4
        )


def test_knockout_mask_forms() -> None:
    image = torch.tensor([[False, True, True, False]])  # (batch, seq)
    allowed = knockout_mask(None, image)  # causal, bool
    assert allowed.shape == (1, 1, 4, 4) and allowed.dtype == torch.bool
    expected = torch.tensor(
        [[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 0, 1]], dtype=torch.bool
    )
    assert torch.equal(allowed[0, 0], expected)
    additive = torch.zeros(1, 1, 4, 4).masked_fill(~torch.ones(4, 4, dtype=torch.bool).tril(), -1e9)
    out = knockout_mask(additive, image)
    assert out.dtype == additive.dtype
    assert torch.equal(out[0, 0] == 0, expected)
    assert torch.equal(knockout_mask(expected[None, None].clone(), image), expected[None, None])
    with pytest.raises(InterventionError, match="square"):
        knockout_mask(torch.ones(1, 1, 1, 4, dtype=torch.bool), image)


def test_unsupported_attention_and_bad_fraction_are_refused(loaded, stimuli, prompt, monkeypatch):
    before = hook_state(loaded.model)
    monkeypatch.setattr(type(loaded.adapter), "attention_implementation", "flash_attention_2")
    with pytest.raises(InterventionError, match="attn_implementation='sdpa'"):
        capture(loaded, stimuli.images, ["lm.0"], prompt=prompt, intervention=LowerLayerMask())
    assert hook_state(loaded.model) == before
    with pytest.raises(ConfigError, match="fraction"):
        LowerLayerMask(fraction=0)
    with pytest.raises(ConfigError, match="unknown condition"):
        make_intervention("dropout")


def test_shuffle_refuses_a_language_model_called_without_inputs_embeds(loaded, stimuli, prompt):
    inputs = loaded.adapter.build_inputs(stimuli.images[:2], prompt)
    (action,) = ShufflePatches(seed=1).actions(loaded.adapter, inputs)
    assert action.path == loaded.adapter.lm_input_path() and action.port == "inputs"
    with pytest.raises(InterventionError, match="not given inputs_embeds"):
        action.edit(((), {"input_ids": inputs["input_ids"]}))


def test_condition_names_parse_to_one_spelling() -> None:
    from interp import CONDITIONS, parse_condition

    assert CONDITIONS == ("baseline", "shuffle", "lower_mask")
    assert parse_condition("shuffle:07").name == "shuffle:7"
    assert parse_condition("mask:0-03") == parse_condition("mask:0-3")
    assert parse_condition("mask:2-5").kind == "mask"
    assert parse_condition("mask:02-5:text").name == "mask:2-5:text"
    assert parse_condition("drop:on_object:008").name == "drop:on_object:8"
    assert parse_condition("mean:lm.03").name == "mean:lm.3"
    assert parse_condition("patch:projector").kind == "patch"
    for bad, message in [
        ("dropout", "unknown condition 'dropout'; conditions are written baseline"),
        ("mask", "needs its argument, e.g. mask:0-1"),
        ("drop:random", "malformed; write drop:POLICY:K"),
        ("drop:nearest:4", "unknown policy 'nearest'; use random, on_object, off_object, norm"),
        ("drop:norm:0", "keeps no image token"),
        ("mean", "needs its argument, e.g. mean:projector"),
        ("patch", "needs its argument, e.g. patch:projector"),
        ("mask:1-2:image", "malformed"),
        ("mask:3-1", "first layer must not exceed the last"),
        ("mask:a-b", "malformed; write mask:A-B"),
        ("lower_mask:2", "takes no argument"),
        ("shuffle:x", "malformed; write shuffle or shuffle:SEED"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_condition(bad)
    assert make_intervention("shuffle:9").seed == 9
    assert make_intervention("shuffle", seed=4).condition == "shuffle"
    assert make_intervention("mask:1-2").condition == "mask:1-2"
    assert make_intervention("mask:1-2:text").text_only
    assert make_intervention("drop:norm:3").condition == "drop:norm:3"
    assert make_intervention("mean:vision.1").condition == "mean:vision.1"
    with pytest.raises(SiteError, match="malformed site name .retina."):
        parse_condition("mean:retina")  # the site is named as sites are


def test_a_layer_window_mask_equals_its_plain_hook_reference(tiny_dir, stimuli, prompt) -> None:
    """mask:2-3 on the LLaVA organism against a fresh copy whose attention modules of LM
    layers 2 and 3 get the knockout through plain pre-hooks; mask:0-1 is lower_mask (the
    lower 25% of 8 layers); a window beyond the model is refused naming its layers."""
    from references import masked_reference

    from interp import LayerWindowMask

    loaded = load_model(tiny_dir, attn_implementation="eager")
    adapter = loaded.adapter
    sites = [f"lm.{i}" for i in range(adapter.n_lm_layers)]
    window = make_intervention("mask:2-3")
    assert isinstance(window, LayerWindowMask) and window.layers(adapter) == [2, 3]
    got = capture(loaded, stimuli.images, sites, prompt=prompt, intervention=window)
    inputs = adapter.build_inputs(stimuli.images, prompt)
    image_keys = adapter.image_token_mask(inputs["input_ids"])
    attention = adapter.attention_path(0).replace(".0.", ".{}.", 1)
    hidden = masked_reference(tiny_dir, inputs, image_keys, [2, 3], attention).hidden_states
    positions = adapter.image_token_positions(inputs["input_ids"])  # (batch, tokens)
    rows = torch.arange(len(positions))[:, None]
    # hidden_states[0] is the embeddings, [i + 1] layer i's output; the last one is after
    # the final norm, so the last layer is compared through the layers before it only.
    for i, site in enumerate(sites[:-1]):
        expected = hidden[i + 1][rows, positions]
        torch.testing.assert_close(got[site], expected, rtol=1e-4, atol=1e-5, msg=site)
    base = capture(loaded, stimuli.images, sites, prompt=prompt)
    for site in ("lm.0", "lm.1"):  # below the window: untouched
        torch.testing.assert_close(got[site], base[site], rtol=0, atol=0)
    lower = capture(loaded, stimuli.images, sites, prompt=prompt, intervention=LowerLayerMask())
    first = capture(
        loaded, stimuli.images, sites, prompt=prompt, intervention=make_intervention("mask:0-1")
    )
    for site in sites:
        torch.testing.assert_close(first[site], lower[site], rtol=0, atol=0)
    with pytest.raises(InterventionError, match="mask:2-9 reaches LM layer 9.*layers 0 to 7"):
        capture(loaded, stimuli.images, ["lm.0"], prompt=prompt, intervention=LayerWindowMask(2, 9))


def test_logit_lens_at_the_last_layer_is_the_models_own_logits(loaded, stimuli, prompt) -> None:
    from interp.experiments.lens import lens_logits, word_ranks

    adapter = loaded.adapter
    last = f"lm.{adapter.n_lm_layers - 1}"
    lens = lens_logits(loaded, stimuli.images[:2], last, prompt=prompt)  # (2, tokens, vocab)
    inputs = adapter.build_inputs(stimuli.images[:2], prompt)
    with torch.no_grad():
        logits = loaded.model(**inputs).logits  # a plain forward pass
    positions = adapter.image_token_positions(inputs["input_ids"])
    expected = logits[torch.arange(2)[:, None], positions]
    torch.testing.assert_close(lens, expected, rtol=1e-4, atol=1e-4)
    earlier = lens_logits(loaded, stimuli.images[:2], "lm.0", prompt=prompt)
    assert (earlier - lens).abs().max() > 1e-3  # an earlier layer reads otherwise
    top = lens.argmax(-1)  # (2, tokens)
    ranks = word_ranks(lens, [int(top[0, 0]), 0])
    assert ranks.shape == (2, lens.shape[1], 2) and int(ranks[0, 0, 0]) == 1  # the top word
    assert int(ranks[0, 0, 1]) == 1 + int((lens[0, 0] > lens[0, 0, 0]).sum())
    with pytest.raises(ConfigError, match="reads LM sites"):
        lens_logits(loaded, stimuli.images[:2], "vision.0", prompt=prompt)


@pytest.mark.parametrize("policy", ["on_object", "norm"])
def test_dropping_tokens_equals_the_shortened_sequence(tiny_dir, loaded, stimuli, prompt, policy):
    """drop:POLICY:K against a fresh copy whose language model is run (plain call) on the
    LLM input with only the kept image tokens, at their original positions: the same
    next-token logits. on_object keeps tokens over objects (by a hand count of each
    token's 8x8 pixels); norm the tokens whose LLM input is largest."""
    from references import hooked_forward

    from interp import box_label_map
    from interp.experiments.interventions import BatchContext, DropTokens

    adapter = loaded.adapter
    k = 5
    drop = make_intervention(f"drop:{policy}:{k}")
    assert isinstance(drop, DropTokens)
    lm_path = adapter.module_path("lm.0")
    for i in range(3):
        image, object_map = stimuli.images[i : i + 1], stimuli.object_map[i]
        context = BatchContext(object_maps=[object_map])
        got = capture_tokens(
            loaded, image, [], prompt=prompt, intervention=drop, context=context, logits=True
        ).logits[0]
        inputs = adapter.build_inputs(image, prompt)
        model, seen = hooked_forward(tiny_dir, inputs, {}, lm_input=lm_path)
        embeds = seen["lm_input"][0]  # (seq, d): what the LLM receives
        image_at = (inputs["input_ids"][0] == model.config.image_token_id).nonzero()[:, 0]
        if policy == "on_object":  # pixels under each 8 px patch, counted by hand
            cells = object_map.reshape(8, 8, 8, 8).transpose(0, 2, 1, 3).reshape(64, 64)
            on = torch.as_tensor((cells >= 0).any(1))
            assert int(on.sum()) >= k
            layout = adapter.token_layout("lm.0", 64)
            assert (box_label_map(object_map, layout.boxes)[0] >= 0).tolist() == on.tolist()
            chosen = None
        else:
            norms = embeds[image_at].norm(dim=-1)
            chosen = norms.argsort(descending=True)[:k]
        keep_mask = drop.kept(adapter, adapter.token_positions(inputs), context, seen["lm_input"])
        kept = keep_mask[0].nonzero()[:, 0]
        assert len(kept) == k
        if chosen is None:
            assert bool(on[kept].all())
        else:
            assert sorted(kept.tolist()) == sorted(chosen.tolist())
        keep = torch.ones(len(embeds), dtype=torch.bool)
        keep[image_at] = False
        keep[image_at[kept]] = True
        position = torch.arange(len(embeds))[keep][None]  # original positions
        with torch.no_grad():
            hidden = model.model.language_model(
                inputs_embeds=embeds[keep][None], position_ids=position
            ).last_hidden_state
            expected = model.lm_head(hidden[0, -1])
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
        full = capture_tokens(loaded, image, [], prompt=prompt, logits=True).logits[0]
        assert (full - got).abs().max() > 1e-3  # dropping changed the answer's logits


def test_drop_on_object_needs_the_object_maps(loaded, stimuli, prompt) -> None:
    before = hook_state(loaded.model)
    with pytest.raises(InterventionError, match="needs the object maps"):
        capture(
            loaded,
            stimuli.images[:2],
            ["lm.0"],
            prompt=prompt,
            intervention=make_intervention("drop:on_object:4"),
        )
    assert hook_state(loaded.model) == before
    with pytest.raises(InterventionError, match="no means yet; call prepare"):
        capture(
            loaded,
            stimuli.images[:2],
            ["lm.0"],
            prompt=prompt,
            intervention=make_intervention("mean:lm.1"),
        )


def test_patch_from_a_partner_equals_a_plain_hook_reference(tiny_dir, loaded, stimuli, prompt):
    """patch:lm.2 on a set of three: each image's layer-2 image tokens are its partner's
    (a derangement, recorded); against a fresh copy whose layer 2 gets the partner's
    output at the image positions through a plain forward hook."""
    from references import edited_forward, hooked_forward

    from interp.experiments.interventions import BatchContext, PatchFromPair
    from interp.sources import ArrayImages

    images = stimuli.images[:3]
    patch = make_intervention("patch:lm.2", seed=4)
    assert isinstance(patch, PatchFromPair)
    patch.prepare(loaded, ArrayImages(images), prompt)
    partners = patch.partners
    assert sorted(partners.tolist()) == [0, 1, 2] and (partners != np.arange(3)).all()
    assert patch.describe(loaded.adapter, 64)["partners"] == partners.tolist()
    context = BatchContext(indices=np.arange(3), prompt=prompt)
    got = capture_tokens(
        loaded, images, ["lm.2", "lm.5"], prompt=prompt, intervention=patch, context=context
    )
    adapter = loaded.adapter
    inputs = adapter.build_inputs(images, prompt)
    where = adapter.image_token_positions(inputs["input_ids"])[0]  # the same in every row
    path = adapter.module_path("lm.2")
    _, seen = hooked_forward(tiny_dir, inputs, {"lm.2": path})
    donor = seen["lm.2"][torch.as_tensor(partners)][:, where]  # (3, tokens, d)

    def put(hidden):
        hidden[:, where] = donor
        return hidden

    kept = edited_forward(tiny_dir, inputs, path, put, {"lm.5": adapter.module_path("lm.5")})
    kept["lm.2"] = kept["edited"]
    for site in ("lm.2", "lm.5"):
        torch.testing.assert_close(got.acts[site], kept[site][:, where], rtol=1e-4, atol=1e-5)
    with pytest.raises(InterventionError, match="needs each image's index"):
        capture(loaded, images, ["lm.0"], prompt=prompt, intervention=patch)


def test_llava_passes_the_checks_every_family_passes(tiny_dir, loaded, stimuli, prompt) -> None:
    from references import assert_new_interventions_match_references

    assert_new_interventions_match_references(loaded, tiny_dir, stimuli.images[:2], prompt)
