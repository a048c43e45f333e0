"""Independent references for the tests: plain torch hooks on a separately loaded copy of
a saved model, the checks every VLM family must pass, and two HDF5 files compared
dataset by dataset."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch
from transformers import AutoModelForImageTextToText

from interp import LayerWindowMask, LowerLayerMask, ShufflePatches, capture_tokens


def hooked_forward(
    folder: str,
    inputs: dict,
    paths: dict[str, str],
    lm_input: str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """Load ``folder`` afresh (in ``dtype``, as the pixels are given to it), run
    ``inputs`` with a forward hook on each of ``paths`` (name -> module path; the output's
    first tensor is kept) and, with ``lm_input``, a pre-hook on that module keeping what
    it receives (under ``"lm_input"``)."""
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=dtype).eval()
    inputs = {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}
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


def edited_forward(
    folder: str, inputs: dict, edited: str, edit, recorded: dict[str, str]
) -> dict[str, torch.Tensor]:
    """Load ``folder`` afresh and run ``inputs`` with a plain forward hook on the module
    ``edited`` that replaces its output's first tensor by ``edit(hidden)`` (a clone to
    change), and hooks keeping the first tensor of each of ``recorded`` (name -> module
    path); returns what was kept, the edited output under ``"edited"``."""
    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    kept: dict[str, torch.Tensor] = {}

    def put(_module, _args, out):
        hidden = edit((out[0] if isinstance(out, tuple) else out).clone())
        kept["edited"] = hidden
        return (hidden, *out[1:]) if isinstance(out, tuple) else hidden

    handles = [model.get_submodule(edited).register_forward_hook(put)]
    handles += [
        model.get_submodule(path).register_forward_hook(
            lambda _m, _i, out, name=name: kept.__setitem__(
                name, out[0] if isinstance(out, tuple) else out
            )
        )
        for name, path in recorded.items()
    ]
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    return kept


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
    """The ablations leave the vision sites and the projector exactly as they were and
    change every LLM site they reach: all of them for shuffle and lower_mask, those from
    layer 1 on for mask:1-1 (layer 0 stays bit-identical)."""
    sites = loaded.adapter.sites()
    base = capture_tokens(loaded, images, sites, prompt=prompt)
    for intervention in (ShufflePatches(seed=1), LowerLayerMask(fraction=0.5)):
        out = capture_tokens(loaded, images, sites, prompt=prompt, intervention=intervention)
        for site in sites:
            if site.startswith("lm."):
                assert (out.acts[site] - base.acts[site]).abs().max() > 1e-4, (intervention, site)
            else:
                torch.testing.assert_close(out.acts[site], base.acts[site], rtol=0, atol=0)
    window = LayerWindowMask(1, 1)
    out = capture_tokens(loaded, images, sites, prompt=prompt, intervention=window)
    for site in sites:
        if site.startswith("lm.") and site != "lm.0":
            assert (out.acts[site] - base.acts[site]).abs().max() > 1e-4, (window, site)
        else:
            torch.testing.assert_close(out.acts[site], base.acts[site], rtol=0, atol=0)


def masked_reference(
    folder: str, inputs: dict, image_keys: torch.Tensor, layers: list[int], attention: str
) -> tuple:
    """A fresh copy of ``folder`` run on ``inputs`` with plain forward pre-hooks on the
    attention modules ``attention.format(layer)`` of ``layers`` that stop every query from
    attending to the image keys ``(batch, seq)`` but its own position; returns the LM's
    hidden states (``output_hidden_states``)."""
    model = AutoModelForImageTextToText.from_pretrained(folder, attn_implementation="eager")
    model.eval()
    modules = dict(model.named_modules())

    def edit(_module, args, kwargs):
        mask = kwargs.get("attention_mask")
        batch, seq = image_keys.shape
        own = torch.arange(seq)[:, None] == torch.arange(seq)[None, :]  # (q, k)
        cut = image_keys[:, None, None, :] & ~own  # (batch, 1, q, k)
        if mask is None:
            mask = torch.zeros(batch, 1, seq, seq).masked_fill(
                ~torch.ones(seq, seq, dtype=torch.bool).tril(), torch.finfo(torch.float32).min
            )
        if mask.dtype == torch.bool:
            return args, {**kwargs, "attention_mask": mask & ~cut}
        return args, {
            **kwargs,
            "attention_mask": mask.masked_fill(cut, torch.finfo(mask.dtype).min),
        }

    handles = [
        modules[attention.format(layer)].register_forward_pre_hook(edit, with_kwargs=True)
        for layer in layers
    ]
    try:
        with torch.no_grad():
            out = model(**inputs, output_hidden_states=True)
    finally:
        for h in handles:
            h.remove()
    return out


def mean_projector_reference(folder: str, inputs: dict, batch: int) -> tuple:
    """A fresh copy of ``folder`` run on ``inputs`` with a plain forward hook that
    replaces the projector's output by its mean over the ``batch`` images (each token
    position its own mean); returns the output (``output_hidden_states``)."""
    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    modules = dict(model.named_modules())
    path = next(n for n in modules if n.endswith(("multi_modal_projector", "merger", "connector")))

    def hook(_module, _args, out):
        tensor = out[0] if isinstance(out, tuple) else out
        per_image = tensor.reshape(batch, -1, tensor.shape[-1])  # (batch, tokens, d)
        mean = per_image.mean(0, keepdim=True).expand_as(per_image).reshape(tensor.shape)
        return (mean, *out[1:]) if isinstance(out, tuple) else mean

    handle = modules[path].register_forward_hook(hook)
    try:
        with torch.no_grad():
            return model(**inputs, output_hidden_states=True)
    finally:
        handle.remove()


def _lm_hidden_at(out, positions: torch.Tensor, n_layers: int) -> dict[str, torch.Tensor]:
    """``lm.<i>`` -> hidden states at ``positions`` ``(batch, tokens)`` from a model output
    with ``hidden_states`` (the last layer's is after the final norm: left out)."""
    rows = torch.arange(len(positions))[:, None]
    states = getattr(out, "hidden_states", None) or out.language_model_outputs.hidden_states
    return {f"lm.{i}": states[i + 1][rows, positions] for i in range(n_layers - 1)}


def assert_new_interventions_match_references(
    loaded, folder: str, images: np.ndarray, prompt: str
) -> None:
    """On two different images of one size:

    - ``mask`` over every LM layer makes the answer independent of the image: the same
      next-token logits for both; ``mask:...:text`` too, leaving the image tokens as
      they were;
    - the logit lens at the last layer equals the model's logits at the image tokens;
    - ``drop:random:K`` equals a fresh copy whose attention, in every LM layer, lets no
      query see the image tokens that are not kept (plain pre-hooks);
    - patching every image token of the second image at the projector with the first's
      gives the first's logits exactly;
    - ``patch:projector`` (two images, each the other's partner) gives each image the
      other's logits;
    - ``mean:projector`` equals a fresh copy whose projector output is replaced by its
      per-position mean over the images (a plain forward hook), and records that mean.
    """
    from interp import make_intervention
    from interp.sources import ArrayImages

    adapter = loaded.adapter
    n = adapter.n_lm_layers
    last = f"lm.{n - 1}"
    blind = make_intervention(f"mask:0-{n - 1}")
    both = capture_tokens(loaded, images, [last], prompt=prompt, intervention=blind, logits=True)
    torch.testing.assert_close(both.logits[0], both.logits[1], rtol=1e-5, atol=1e-5)
    seen = capture_tokens(loaded, images, [last], prompt=prompt, logits=True)
    assert (seen.logits[0] - seen.logits[1]).abs().max() > 1e-4  # without it they differ

    # mask:A-B:text over every layer: the text never sees the image (blind logits), while
    # the image tokens, which still attend to each other, are exactly the baseline's.
    text_only = make_intervention(f"mask:0-{n - 1}:text")
    sites = [f"lm.{i}" for i in range(n)]
    cut = capture_tokens(loaded, images, sites, prompt=prompt, intervention=text_only, logits=True)
    torch.testing.assert_close(cut.logits[0], cut.logits[1], rtol=1e-5, atol=1e-5)
    full = capture_tokens(loaded, images, sites, prompt=prompt)
    question = adapter.default_prompt("Which of these is it, then?")
    other = capture_tokens(loaded, images, ["lm.0"], prompt=question)
    at = adapter.image_token_mask(adapter.build_inputs(images, prompt)["input_ids"])[0]
    where = at.nonzero()[:, 0]
    one_run = int(where.max() - where.min()) + 1 == len(where)  # no text between image tokens
    if one_run and torch.equal(other.acts["lm.0"], full.acts["lm.0"]):  # nor read after them
        for site in sites:  # (Idefics3's tiles have text between them; PaliGemma's image
            # tokens read the question: there the image tokens change through the text)
            torch.testing.assert_close(cut.acts[site], full.acts[site], rtol=1e-5, atol=1e-5)

    # The logit lens at the last LM layer is the model's own logits at the image tokens.
    from interp.experiments.lens import lens_logits

    inputs = adapter.build_inputs(images, prompt)
    positions = adapter.token_positions(inputs).patch  # (batch, tokens)
    with torch.no_grad():
        logits = loaded.model(**loaded.move_inputs(inputs)).logits  # (batch, seq, vocab)
    rows = torch.arange(len(images))[:, None]
    lens = lens_logits(loaded, images, last, prompt=prompt)
    torch.testing.assert_close(lens, logits[rows, positions].float(), rtol=1e-4, atol=1e-4)

    k = max(1, positions.shape[1] // 3)
    drop = make_intervention(f"drop:random:{k}", seed=3)
    kept = torch.tensor(drop.describe(adapter, images.shape[1:3])["kept_tokens"])
    got = capture_tokens(loaded, images, sites, prompt=prompt, intervention=drop, logits=True)
    image_keys = adapter.image_token_mask(inputs["input_ids"]).clone()  # every image token
    image_keys[:, positions[:, kept]] = False  # ...but those kept
    attention = adapter.attention_path(0).replace(".0.", ".{}.", 1)
    out = masked_reference(folder, inputs, image_keys, list(range(n)), attention)
    for site, expected in _lm_hidden_at(out, positions, n).items():
        torch.testing.assert_close(got.acts[site], expected, rtol=1e-4, atol=1e-4, msg=site)
    torch.testing.assert_close(got.logits, out.logits[:, -1], rtol=1e-4, atol=1e-4)

    # Patching every image token at the projector restores the clean run exactly.
    from interp.experiments.patching import PatchTokens

    clean = capture_tokens(loaded, images[:1], ["projector"], prompt=prompt, logits=True)
    every = torch.ones(1, clean.acts["projector"].shape[1], dtype=torch.bool)
    patch = PatchTokens("projector", clean.acts["projector"][0], every)
    restored = capture_tokens(
        loaded, images[1:], [], prompt=prompt, intervention=patch, logits=True
    )
    torch.testing.assert_close(restored.logits, clean.logits, rtol=1e-5, atol=1e-5)
    corrupted = capture_tokens(loaded, images[1:], [], prompt=prompt, logits=True).logits
    assert (corrupted - clean.logits).abs().max() > 1e-4

    # patch:projector on a set of two: each image's LLM gets the other's image tokens,
    # which is the other image's own run (the prompt is the same).
    swap = make_intervention("patch:projector")
    swap.prepare(loaded, ArrayImages(images), prompt)
    assert swap.partners.tolist() == [1, 0]
    from interp.experiments.interventions import BatchContext

    context = BatchContext(indices=np.arange(2), prompt=prompt)
    swapped = capture_tokens(
        loaded, images, [], prompt=prompt, intervention=swap, context=context, logits=True
    )
    both = capture_tokens(loaded, images, [], prompt=prompt, logits=True).logits
    torch.testing.assert_close(swapped.logits, both.flip(0), rtol=1e-5, atol=1e-5)

    mean = make_intervention("mean:projector")
    mean.prepare(loaded, ArrayImages(images), prompt)
    got = capture_tokens(loaded, images, ["projector", *sites], prompt=prompt, intervention=mean)
    base = capture_tokens(loaded, images, ["projector"], prompt=prompt).acts["projector"]
    expected_mean = base.mean(0, keepdim=True).expand_as(base)
    torch.testing.assert_close(got.acts["projector"], expected_mean, rtol=1e-5, atol=1e-5)
    out = mean_projector_reference(folder, inputs, len(images))
    for site, expected in _lm_hidden_at(out, positions, n).items():
        torch.testing.assert_close(got.acts[site], expected, rtol=1e-4, atol=1e-4, msg=site)


def assert_same_cache(a: Path, b: Path, *, ulps: int = 0, chunks: bool = False) -> None:
    """Every attribute and dataset of two HDF5 files equal: bit for bit (floats compared as
    their raw bits, NaN included), or, with ``ulps``, activations within that many
    float16 steps of each other, a step taken at no less than a thousandth of the
    dataset's largest value (values near 0 carry the rounding of larger terms); with
    ``chunks``, the same chunk shapes too."""
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        assert dict(fa.attrs) == dict(fb.attrs)
        names_a, names_b = [], []
        fa.visit(names_a.append)
        fb.visit(names_b.append)
        assert sorted(names_a) == sorted(names_b)
        for name in names_a:
            if not isinstance(fa[name], h5py.Dataset):
                continue
            found, expected = fa[name][()], fb[name][()]
            assert found.dtype == expected.dtype and found.shape == expected.shape, name
            assert not chunks or fa[name].chunks == fb[name].chunks, name
            if ulps and name.startswith(("acts/", "ablations/", "extra/")):
                size = np.abs(expected.astype(np.float32))
                floor = np.maximum(size, 1e-3 * size.max())
                step = np.spacing(floor.astype(np.float16)).astype(np.float32)
                difference = np.abs(found.astype(np.float32) - expected.astype(np.float32))
                assert (difference <= ulps * step).all(), (name, float(difference.max()))
            else:
                if found.dtype.kind == "f":  # bit for bit
                    found = found.view(f"u{found.dtype.itemsize}")
                    expected = expected.view(f"u{expected.dtype.itemsize}")
                np.testing.assert_array_equal(found, expected, err_msg=name)
            assert dict(fa[name].attrs) == dict(fb[name].attrs), name
