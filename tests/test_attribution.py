"""Integrated gradients, causal tracing and attribution patching (``interp attribute``),
each checked against what it must equal: completeness (attributions sum to the logit's
change), the model's own logits at the path's end, exact restoration at zero noise and
when every token is restored, agreement with real patching; on the organism and every
family's tiny model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from analyses.attribution import as_attribution_rows, mean_over_pairs, method_agreement
from analyses.cli import main
from interp import ConfigError, capture_tokens, load_model
from interp.experiments.attribution import baseline_image, causal_tracing, integrated_gradients
from interp.experiments.patching import PatchPair, attribution_margins, patch_margins


def _logit(loaded, image, question, answer) -> float:
    prompt = loaded.adapter.default_prompt(question)
    logits = capture_tokens(loaded, image[None], [], prompt=prompt, logits=True).logits
    word = loaded.processor.tokenizer(answer, add_special_tokens=False)["input_ids"][0]
    return float(logits[0, word])


@pytest.mark.parametrize("site", ["projector", "lm.1", "pixels"])
def test_integrated_gradients_are_complete(organism, pair, site) -> None:
    """With 128 steps the attributions sum to the logit's change within 1%; the path's
    ends are the model's own logits for the image and for the baseline image."""
    for baseline in ("black", "blur") if site == "projector" else ("black",):
        table, check = integrated_gradients(
            organism, pair.clean, pair.question, pair.answer, site=site, baseline=baseline,
            steps=128, batch_size=64,
        )  # fmt: skip
        assert check.relative_error < 0.01, (site, baseline, check)
        assert table["value"].sum() == pytest.approx(check.total, rel=1e-6)
        assert check.at_image == pytest.approx(
            _logit(organism, pair.clean, pair.question, pair.answer), abs=1e-4
        )
        if site in ("projector", "pixels"):  # nothing of the image reaches the LM otherwise
            base = baseline_image(pair.clean, baseline)
            assert check.at_baseline == pytest.approx(
                _logit(organism, base, pair.question, pair.answer), abs=1e-4
            )
    assert len(table) == 64 and set(table.method) == {"integrated_gradients"}


def test_baselines() -> None:
    image = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    assert not baseline_image(image, "black").any()
    mean = baseline_image(image, "mean")
    assert (mean == mean[0, 0]).all() and abs(int(mean[0, 0, 0]) - image[..., 0].mean()) <= 0.5
    blurred = baseline_image(image, "blur")
    assert blurred.shape == image.shape and blurred.std() < image.std() / 2
    with pytest.raises(ConfigError, match="baseline must be one of black, mean, blur"):
        baseline_image(image, "white")


def test_causal_tracing_restores_exactly(organism, pair) -> None:
    """At zero noise every restoration gives the clean probability itself; with noise,
    restoring every image token at the projector removes the noise, so it too; the
    noised probability is the mean over the draws, and the last layer restores nothing."""
    zero = causal_tracing(organism, pair.clean, pair.question, pair.answer,
                          ["projector", "lm.2"], noise=0.0, samples=1)  # fmt: skip
    np.testing.assert_allclose(zero.output, zero.clean, rtol=1e-9, atol=1e-12)
    assert (zero.corrupted == zero.clean).all()
    every = causal_tracing(organism, pair.clean, pair.question, pair.answer, ["projector"],
                           noise=3.0, samples=2, window=64)  # fmt: skip
    np.testing.assert_allclose(every.output, every.clean, rtol=1e-9)
    np.testing.assert_allclose(every.value, 1.0, rtol=1e-6)
    assert every.corrupted.iloc[0] < every.clean.iloc[0]  # the noise costs the answer
    last = f"lm.{organism.adapter.n_lm_layers - 1}"
    traced = causal_tracing(organism, pair.clean, pair.question, pair.answer, ["lm.0", last],
                            samples=2)  # fmt: skip
    assert traced[traced.site == last].value.abs().max() < 1e-9  # after the last layer
    assert traced[traced.site == "lm.0"].value.max() > 0.2  # one token brings back a share
    with pytest.raises(ConfigError, match="cannot undo it"):
        causal_tracing(organism, pair.clean, pair.question, pair.answer, ["vision.1"])


def test_attribution_patching_ranks_the_cells_as_real_patching(organism, pair) -> None:
    """On the organism's colour twin, attribution patching orders the tokens of each LM
    site as exact patching does (Spearman above 0.6 at every site the answer reads)."""
    sites = ["projector", "lm.0", "lm.2", "lm.4"]
    table = as_attribution_rows(patch_margins(organism, pair, sites).assign(method="exact"))
    table = pd.concat([table, as_attribution_rows(attribution_margins(organism, pair, sites))])
    agreement = method_agreement(table, "attribution").set_index("site")
    assert (agreement.spearman > 0.6).all(), agreement
    mean = mean_over_pairs(table.assign(pair=np.where(table.token % 2, "a", "b")))
    assert mean.empty  # no cell is in both halves: left out, not averaged over one pair
    with pytest.raises(ConfigError, match="no cell has both 'attribution' and 'pixels'"):
        method_agreement(table, "attribution", reference="pixels")
    twice = mean_over_pairs(pd.concat([table, table.assign(pair="other")]))
    assert len(twice) == len(table) and (twice.pair == "mean of 2 pairs").all()


def _own_pair(side: int) -> PatchPair:
    clean = np.full((side, side, 3), 255, dtype=np.uint8)
    corrupt = clean.copy()
    clean[2 : side // 2, 2 : side // 2] = (255, 0, 0)
    corrupt[2 : side // 2, 2 : side // 2] = (0, 0, 255)
    return PatchPair(clean, corrupt, "what color is the square ?", "red", "blue", "own")


@pytest.mark.parametrize("family", ["llava_next", "paligemma", "gemma3", "qwen2_vl", "idefics3"])
def test_every_family_attributes_and_traces(family, tmp_path) -> None:
    """Each family's tiny model: integrated gradients complete within 1% at the projector
    (the pixels where the model takes one image grid), causal tracing exact at zero
    noise, attribution patching and exact patching on the same cells."""
    import tiny_vlms

    loaded = load_model(getattr(tiny_vlms, f"build_{family}")(tmp_path / family))
    pair = _own_pair(32)
    _, check = integrated_gradients(loaded, pair.clean, pair.question, pair.answer,
                                    steps=128, batch_size=64)  # fmt: skip
    assert check.relative_error < 0.01, check
    if family in ("paligemma", "gemma3"):
        _, check = integrated_gradients(loaded, pair.clean, pair.question, pair.answer,
                                        site="pixels", steps=128, batch_size=64)  # fmt: skip
        assert check.relative_error < 0.01, check
    else:
        with pytest.raises(ConfigError, match="attribute a site's tokens instead"):
            integrated_gradients(loaded, pair.clean, pair.question, pair.answer, site="pixels")
    zero = causal_tracing(loaded, pair.clean, pair.question, pair.answer, ["lm.1"],
                          noise=0.0, samples=1)  # fmt: skip
    np.testing.assert_allclose(zero.output, zero.clean, rtol=1e-6)
    exact = patch_margins(loaded, pair, ["lm.1"])
    estimated = attribution_margins(loaded, pair, ["lm.1"])
    assert list(exact.token) == list(estimated.token) and estimated.restored.notna().all()
    both = as_attribution_rows(pd.concat([exact, estimated], ignore_index=True))
    agreement = method_agreement(both, "attribution")  # reported per site
    assert len(agreement) == 1 and -1 <= agreement.spearman.iloc[0] <= 1


def test_interp_attribute(tmp_path, capsys) -> None:
    """Methods on two built-in pairs: the table with every pair's rows and their mean,
    the agreement and completeness tables, a map per method; your own
    pair from files; settings that contradict each other are refused."""
    out = tmp_path / "a"
    assert main(["attribute", "--methods", "attribution", "exact", "integrated_gradients",
                 "--n-pairs", "2", "--sites", "projector", "lm.1", "--steps", "16",
                 "--out", str(out), "--no-progress"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "3 methods on 2 pairs at 2 sites" in printed and "Spearman" in printed
    table = pd.read_csv(out / "attribution.csv")
    assert set(table.method) == {"attribution", "exact", "integrated_gradients"}
    assert table.pair.nunique() == 3 and "mean of 2 pairs" in set(table.pair)
    assert len(pd.read_csv(out / "agreement.csv")) == 2 * 2 * 2  # methods x pairs x sites
    assert len(pd.read_csv(out / "completeness.csv")) == 2 * 2  # pairs x sites
    for method in ("attribution", "exact", "integrated_gradients"):  # (PDF: as every figure)
        assert (out / f"attribution_map_{method}.html").stat().st_size > 0
    pair = _own_pair(64)
    Image.fromarray(pair.clean).save(tmp_path / "clean.png")
    Image.fromarray(pair.corrupt).save(tmp_path / "corrupt.png")
    own = ["attribute", "--clean", str(tmp_path / "clean.png"), "--corrupt",
           str(tmp_path / "corrupt.png"), "--question", pair.question, "--answer", "red",
           "--wrong", "blue", "--methods", "causal_tracing", "--sites", "lm.0",
           "--samples", "1", "--out", str(tmp_path / "own"), "--no-progress"]  # fmt: skip
    assert main(own) == 0
    assert set(pd.read_csv(tmp_path / "own" / "attribution.csv").pair) == {
        "clean.png vs corrupt.png"
    }
    assert main([*own, "--n-pairs", "3"]) == 2
    assert "n-pairs 3 counts built-in twin pairs" in capsys.readouterr().err
    assert main(["attribute", "--methods", "gradients", "--no-progress"]) == 2


def test_integrated_gradients_refuse_what_they_cannot_do(organism, pair, tmp_path) -> None:
    import tiny_vlms

    encoder = load_model(tiny_vlms.build_encoder("clip", tmp_path / "clip"))
    with pytest.raises(ConfigError, match="no answer's logit"):
        integrated_gradients(encoder, pair.clean, pair.question, pair.answer)
    with pytest.raises(ConfigError, match="steps and batch_size must be >= 1"):
        integrated_gradients(organism, pair.clean, pair.question, pair.answer, steps=0)
