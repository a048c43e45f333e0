"""The logit lens table and attention to the image, against the model's own logits and
its own attention weights (output_attentions)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from analyses.cli import main
from interp import ConfigError, StimulusSpec, box_label_map, generate, load_model
from interp.experiments.attention import attention_table, attention_to_image
from interp.experiments.lens import lens_table


@pytest.fixture(scope="module")
def stimuli():
    return generate(StimulusSpec(n_images=10, image_size=64, seed=5))


def test_lens_ranks_at_the_last_layer_are_the_models_own(organism, stimuli) -> None:
    """At the last LM layer the lens is the model's logits: the class word's ranks at the
    tokens over the first object, recomputed from a plain forward pass with numpy."""
    adapter = organism.adapter
    prompt = adapter.default_prompt("what color is it ?")
    last = f"lm.{adapter.n_lm_layers - 1}"
    table = lens_table(organism, stimuli, attributes=["color"], sites=["lm.0", last], prompt=prompt)
    assert set(table.site) == {"lm.0", last} and set(table.tokens) == {"on_object", "off_object"}
    inputs = adapter.build_inputs(stimuli.images, prompt)
    with torch.no_grad():
        logits = organism.model(**inputs).logits.numpy()  # (n, seq, vocab)
    positions = adapter.image_token_positions(inputs["input_ids"]).numpy()  # (n, tokens)
    over = box_label_map(stimuli.object_map, adapter.token_layout(last, 64).boxes)
    tokenizer = organism.processor.tokenizer
    names = stimuli.label_classes["color"]
    ranks = []
    for i in range(len(stimuli)):
        word = tokenizer.convert_tokens_to_ids(names[stimuli.labels["color"][i]])
        at = logits[i, positions[i][over[i] == 0]]  # (tokens on object 0, vocab)
        ranks += list(1 + (at > at[:, [word]]).sum(1))  # 1 = the top word
    row = table[(table.site == last) & (table.tokens == "on_object")].iloc[0]
    assert row["n"] == len(ranks) and row["median_rank"] == np.median(ranks)
    assert row["top1"] == pytest.approx(np.mean(np.asarray(ranks) == 1))
    with pytest.raises(ConfigError, match="not a categorical label"):
        lens_table(organism, stimuli, attributes=["x"], prompt=prompt)


def test_attention_to_the_image_is_the_models_own(stimuli) -> None:
    """Against output_attentions, at each prompt's last real token (prompts of different
    lengths: padded), for every layer and head; the weights of a row sum to at most 1."""
    eager = load_model("organism", attn_implementation="eager")
    adapter = eager.adapter
    questions = ["how many objects are there ?", "what color is the big red circle ?"]
    prompts = [adapter.default_prompt(q) for q in questions] * 2
    images = stimuli.images[:4]
    weights = attention_to_image(eager, images, prompt=prompts)  # (4, layers, heads, tokens)
    inputs = adapter.build_inputs(images, prompts)
    with torch.no_grad():
        out = eager.model(**inputs, output_attentions=True)
    positions = adapter.token_positions(inputs).patch
    last = inputs["attention_mask"].sum(1) - 1  # right padding
    for layer, attention in enumerate(out.attentions):  # (batch, heads, q, k)
        for row in range(4):
            expected = attention[row, :, last[row]][:, positions[row]]  # (heads, tokens)
            torch.testing.assert_close(weights[row, layer], expected, rtol=1e-5, atol=1e-6)
    assert float(weights.sum(-1).max()) <= 1 + 1e-5
    table = attention_table(eager, weights[:, :2], 64, layers=[0, 1])
    assert len(table) == 4 * 2 * weights.shape[2] * 64 and set(table.layer) == {0, 1}
    chosen = attention_to_image(eager, images[:1], prompt=prompts[0], layers=[3], query=-2)
    expected = out.attentions[3][0, :, last[0] - 1][:, positions[0]]
    torch.testing.assert_close(chosen[0, 0], expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="attn_implementation='eager'"):
        attention_to_image(load_model("organism"), images, prompt=prompts)
    with pytest.raises(ConfigError, match="layers \\[9\\] are not LM layers"):
        attention_to_image(eager, images, prompt=prompts, layers=[9])


def test_lens_and_attention_commands(tmp_path, capsys) -> None:
    out = tmp_path / "lens"
    assert main(["lens", "--out", str(out), "--n-images", "8", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "median rank of the class word at the tokens over the object (1 = top)" in printed
    table = pd.read_csv(out / "lens.csv")
    assert table.median_rank.min() >= 1  # counted from 1, the top word
    for value in table[table.tokens == "on_object"].median_rank:  # printed as the table holds
        assert f"{value:g}" in printed
    assert {"color", "shape", "size"} <= set(table.attribute) and "cell" not in set(table.attribute)
    assert (out / "lens_ranks.html").is_file()
    out = tmp_path / "attention"
    argv = ["attention", "--out", str(out), "--n-images", "3", "--layers", "0", "5"]
    assert main([*argv, "--conditions", "baseline", "shuffle", "--no-progress"]) == 0
    table = pd.read_csv(out / "attention.csv")
    assert set(table.condition) == {"baseline", "shuffle"} and set(table.layer) == {0, 5}
    assert {"attention_map.html", "attention_by_layer.html"} <= {p.name for p in out.iterdir()}
    # interp plot exports their figures like every other
    figures = tmp_path / "figures"
    argv = ["plot", str(out / "attention.csv"), str(tmp_path / "lens" / "lens.csv")]
    assert main([*argv, "--out", str(figures), "--formats", "svg"]) == 0
    made = {p.name for p in figures.iterdir()}
    assert made == {"attention_map.svg", "attention_by_layer.svg", "lens_ranks.svg"}
    assert (figures / "lens_ranks.svg").read_text().startswith("<svg")
