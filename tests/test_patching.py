"""Activation and attribution patching on the patch grid, against plain hooks, finite
differences and the clean run itself."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import hook_state
from PIL import Image
from transformers import AutoModelForImageTextToText

from analyses.cli import main
from interp import ConfigError
from interp.experiments.patching import PatchPair, PatchTokens, attribution_margins, patch_margins
from interp.models.tracing import capture_tokens
from interp.organism.twins import twin_pair


def test_a_twin_pair_changes_one_object_and_keeps_the_question(pair) -> None:
    assert pair.answer != pair.wrong and "color" in pair.question
    changed = (pair.clean != pair.corrupt).any(-1)  # (H, W)
    assert 0 < changed.sum() < 0.1 * changed.size  # one object's pixels
    shape = twin_pair("shape", 64, seed=4)
    assert "shape" in shape.question and shape.answer != shape.wrong
    mirror = twin_pair("mirror", 64, seed=2)
    np.testing.assert_array_equal(mirror.corrupt, mirror.clean[:, ::-1])  # mirrored whole
    assert {mirror.answer, mirror.wrong} == {"left", "right"}


def test_restoring_every_token_at_the_projector_restores_the_clean_answer(organism, pair):
    table = patch_margins(organism, pair, ["projector", "lm.0"], groups=[list(range(64)), [5]])
    every = table[(table.site == "projector") & (table.token == -64)].iloc[0]
    assert every["margin"] == pytest.approx(every["clean_margin"], abs=1e-4)
    assert every["restored"] == pytest.approx(1.0, abs=1e-5)
    assert every["clean_margin"] > 0 > every["corrupt_margin"]  # the pair flips the answer
    lm = table[(table.site == "lm.0") & (table.token == -64)].iloc[0]
    assert 0.5 < lm["restored"] < 1.0 - 1e-3  # text already read the corrupted image below


def test_one_token_equals_a_plain_hook_reference(organism, pair) -> None:
    """Token 20 at the projector: a fresh copy of the model with a forward hook that puts
    the clean run's projector output at that token."""
    table = patch_margins(organism, pair, "projector")
    assert len(table) == 64 and list(table.token) == list(range(64))
    model = AutoModelForImageTextToText.from_pretrained(organism.source).eval()
    projector = model.get_submodule(organism.adapter.module_path("projector"))
    prompt = organism.adapter.default_prompt(pair.question)
    tokenizer = organism.processor.tokenizer
    right, wrong = tokenizer.convert_tokens_to_ids([pair.answer, pair.wrong])
    seen = {}
    handle = projector.register_forward_hook(
        lambda _m, _i, out: seen.__setitem__("clean", out.detach().clone())
    )
    try:
        with torch.no_grad():
            model(**organism.processor(images=[pair.clean], text=[prompt], return_tensors="pt"))
    finally:
        handle.remove()

    def put(_module, _args, out):
        out = out.clone()
        out[:, 20] = seen["clean"][:, 20]
        return out

    handle = projector.register_forward_hook(put)
    try:
        with torch.no_grad():
            inputs = organism.processor(images=[pair.corrupt], text=[prompt], return_tensors="pt")
            logits = model(**inputs).logits[0, -1]
    finally:
        handle.remove()
    row = table.set_index("token").loc[20]
    assert row["margin"] == pytest.approx(float(logits[right] - logits[wrong]), abs=1e-4)
    layout = organism.adapter.token_layout("projector", 64)
    assert (row["row"], row["col"]) == tuple(layout.grid[20])


def test_attribution_is_the_derivative_exact_patching_takes_in_steps(organism, pair) -> None:
    """Attribution patching's estimate for a token equals the finite difference of the
    margin when the token moves a small step from its corrupted value toward its clean
    one (exact patching with an interpolated value), divided by the step."""
    before = hook_state(organism.model)
    sites = ["projector", "lm.2"]
    attribution = attribution_margins(organism, pair, sites)
    assert hook_state(organism.model) == before  # its hooks are gone
    prompt = organism.adapter.default_prompt(pair.question)
    ids = organism.processor.tokenizer.convert_tokens_to_ids([pair.answer, pair.wrong])
    clean = capture_tokens(organism, pair.clean[None], sites, prompt=prompt).acts
    corrupt = capture_tokens(organism, pair.corrupt[None], sites, prompt=prompt, logits=True)
    base = float(corrupt.logits[0, ids[0]] - corrupt.logits[0, ids[1]])
    step = 1e-2
    for site in sites:
        rows = attribution[attribution.site == site].set_index("token")
        for token in rows["restored"].abs().sort_values().index[-3:]:  # the largest
            moved = corrupt.acts[site][0].clone()
            moved[token] += step * (clean[site][0, token] - moved[token])
            chosen = torch.zeros(1, len(moved), dtype=torch.bool)
            chosen[0, token] = True
            out = capture_tokens(
                organism, pair.corrupt[None], [], prompt=prompt,
                intervention=PatchTokens(site, moved, chosen), logits=True,
            ).logits  # fmt: skip
            slope = (float(out[0, ids[0]] - out[0, ids[1]]) - base) / step
            estimate = rows.loc[token, "margin"] - rows.loc[token, "corrupt_margin"]
            assert estimate == pytest.approx(slope, rel=0.05, abs=1e-3), (site, token)
    exact = patch_margins(organism, pair, "projector")
    r = np.corrcoef(exact.restored, attribution[attribution.site == "projector"].restored)[0, 1]
    assert r > 0.5  # the first-order map agrees with the exact one where patching is gentle


def test_bad_pairs_are_refused(organism, pair) -> None:
    with pytest.raises(ConfigError, match="one size"):
        PatchPair(pair.clean, pair.corrupt[:32], pair.question, "red", "blue")
    with pytest.raises(ConfigError, match="must differ"):
        PatchPair(pair.clean, pair.corrupt, pair.question, "red", "red")
    with pytest.raises(ConfigError, match="token indices 0 to 63"):
        patch_margins(organism, pair, "projector", groups=[[64]])


def test_patch_command_with_a_pair_of_files(pair, tmp_path, capsys) -> None:
    Image.fromarray(pair.clean).save(tmp_path / "clean.png")
    Image.fromarray(pair.corrupt).save(tmp_path / "corrupt.png")
    out = tmp_path / "patched"
    argv = ["patch", "--clean", str(tmp_path / "clean.png"), "--corrupt"]
    argv += [str(tmp_path / "corrupt.png"), "--question", pair.question, "--answer"]
    argv += [pair.answer, "--wrong", pair.wrong, "--sites", "projector", "lm.1", "--out", str(out)]
    assert main(argv) == 0
    table = pd.read_csv(out / "patching.csv")
    assert set(table.method) == {"exact", "attribution"} and set(table.site) == {
        "projector",
        "lm.1",
    }
    assert {"patching_map_exact.html", "patching_map_attribution.html", "patching_pair.png"} <= {
        p.name for p in out.iterdir()
    }
    printed = capsys.readouterr().out
    assert "every_token" in printed and "1.0" in printed  # every token at the projector
    every = table[(table.site == "projector") & (table.token == -64)]
    assert float(every.restored.iloc[0]) == pytest.approx(1.0, abs=1e-5)
    figures = tmp_path / "figures"
    assert main(["plot", str(out / "patching.csv"), "--out", str(figures)]) == 0
    assert {p.name for p in figures.iterdir()} == {
        "patching_map_exact.html",
        "patching_map_attribution.html",
    }
    assert main(["patch", "--clean", str(tmp_path / "clean.png"), "--out", str(out)]) == 2
    assert "missing ['corrupt', 'question', 'answer', 'wrong']" in capsys.readouterr().err
    argv[4] = str(tmp_path / "nothing.png")
    assert main([*argv[:-1], str(tmp_path / "other")]) == 2
    assert "corrupt: no image at" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["exact", "attribution"])
def test_a_pair_of_the_same_image_is_refused(pair, tmp_path, capsys, method) -> None:
    Image.fromarray(pair.clean).save(tmp_path / "clean.png")
    argv = [
        "patch",
        "--clean",
        str(tmp_path / "clean.png"),
        "--corrupt",
        str(tmp_path / "clean.png"),
    ]
    argv += ["--question", pair.question, "--answer", pair.answer, "--wrong", pair.wrong]
    argv += ["--sites", "projector", "--method", method, "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "give the same margin" in err and "nothing to restore" in err
    assert not (tmp_path / "o" / "patching.csv").exists()
