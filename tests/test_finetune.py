"""interp organism finetune: vocabulary growth, the pixel task, and a short run."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from interp import ConfigError, StimulusSpec, generate, load_model
from interp.cli import main
from interp.organism.finetune import (
    CHANNELS,
    FinetuneConfig,
    _dialogues,
    extend_vocabulary,
    finetune,
    pixel_questions,
)
from interp.organism.training import encode_dialogues, pixels_to_tensor


def test_pixel_questions_ask_a_channel_in_eighths() -> None:
    s = generate(StimulusSpec(n_images=3, seed=4, complexity=4))
    rng = np.random.default_rng(0)
    for i in range(len(s)):
        qas = pixel_questions(s.images[i], s.object_map[i], rng, 6)
        for k, qa in enumerate(qas):
            channel, x, y = re.fullmatch(
                r"what is the (\w+) value at x (\d+) y (\d+) \?", qa.question
            ).groups()
            value = s.images[i, int(y), int(x), CHANNELS.index(channel)]
            assert qa.answer == str(int(value) // 32)
            if k % 2 == 0:  # every other one lies on an object
                assert s.object_map[i, int(y), int(x)] >= 0


def test_new_words_get_new_ids_and_the_old_ones_keep_their_outputs() -> None:
    loaded = load_model("organism")
    model, processor = loaded.model, loaded.processor
    before = dict(processor.tokenizer.get_vocab())
    prompt = loaded.adapter.default_prompt("what color is the circle ?")
    image = generate(StimulusSpec(n_images=1, seed=1)).images
    inputs = processor(images=list(image), text=[prompt], return_tensors="pt")
    with torch.no_grad():
        old = model(**inputs).logits  # (1, seq, vocab)
    added = extend_vocabulary(model, processor, ["5", "8", "value", "red"])
    assert added == ["5", "8", "value"]  # red was a word already
    vocab = processor.tokenizer.get_vocab()
    assert all(vocab[w] == i for w, i in before.items())
    assert sorted(vocab[w] for w in added) == list(range(len(before), len(before) + 3))
    assert processor.tokenizer("8 value", add_special_tokens=False)["input_ids"] == [
        vocab["8"],
        vocab["value"],
    ]
    with torch.no_grad():
        new = model(**inputs).logits
    assert new.shape[-1] == len(vocab)
    torch.testing.assert_close(new[..., : old.shape[-1]], old)
    assert extend_vocabulary(model, processor, ["5"]) == []


def _held_out_loss(folder: str, config: FinetuneConfig) -> float:
    """The model's own loss on dialogues of a step no run trains on."""
    loaded = load_model(folder)
    extend_vocabulary(loaded.model, loaded.processor, ["5", "6", "7", "8"])
    images, dialogues = _dialogues(config, 10_000, np.random.default_rng(99))
    rows, cols = loaded.adapter.patch_grid
    batch = encode_dialogues(
        loaded.processor, loaded.adapter.default_prompt, dialogues, rows * cols
    )
    with torch.no_grad():
        out = loaded.model(**batch, pixel_values=pixels_to_tensor(images, loaded.processor))
    return float(out.loss)


def test_a_short_run_lowers_its_loss_and_adapts_only_what_it_is_told(tmp_path) -> None:
    config = FinetuneConfig(
        out=str(tmp_path / "adapted"),
        complexity=4,
        steps=20,
        batch=16,
        lr=2e-3,
        warmup=1,
        train_encoder=True,
        seed=1,
        progress=False,
    )
    result = finetune(config)
    losses = result.history["loss"].to_numpy()
    assert losses[-4:].mean() < losses[:4].mean() - 0.2, losses
    torch.manual_seed(0)
    start = _held_out_loss("organism", config)
    torch.manual_seed(0)
    after = _held_out_loss(str(result.folder), config)
    assert after < start - 0.2, (start, after)
    organism = load_model("organism").model.state_dict()
    adapted = load_model(str(result.folder)).model.state_dict()
    tower = [k for k in organism if "vision_tower" in k]
    assert tower and any(not torch.equal(organism[k], adapted[k]) for k in tower)

    frozen = FinetuneConfig(out=str(tmp_path / "frozen"), steps=2, batch=4, progress=False)
    kept = load_model(str(finetune(frozen).folder)).model.state_dict()
    assert all(torch.equal(organism[k], kept[k]) for k in tower), "the encoder stayed frozen"
    assert any(not torch.equal(organism[k], kept[k]) for k in organism if k not in tower)
    assert kept["model.language_model.embed_tokens.weight"].shape[0] == len(
        load_model("organism").processor.tokenizer
    ), "complexity 2 needs no new words"
    with pytest.raises(Exception, match="already holds a model"):
        finetune(frozen)


def test_the_command_writes_a_card_with_the_pixel_task(tmp_path, capsys) -> None:
    out = tmp_path / "tuned"
    argv = ["organism", "finetune", "--from", "organism", "--out", str(out), "--steps", "2"]
    argv += ["--batch", "4", "--pixel-task", "--eval-images", "50", "--no-progress"]
    assert main(argv) == 0
    card = (out / "README.md").read_text()
    assert "fine-tuned from `organism`" in card and "| complexity 2 | pixel |" in card
    assert "--pixel-task" in card and "model and card:" in capsys.readouterr().out
    assert main(["organism", "finetune", "--out", str(tmp_path / "x"), "--complexity", "9"]) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"complexity": 0}, "complexity"), ({"steps": 0}, "steps"), ({"device": "tpu"}, "device")],
)
def test_bad_settings_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        FinetuneConfig(**kwargs)


def test_a_run_is_seeded(tmp_path) -> None:
    """New words' embeddings and every step are drawn from the seed: two runs agree."""
    states = []
    for name in ("a", "b"):
        config = FinetuneConfig(
            out=str(tmp_path / name), complexity=4, steps=1, batch=2, progress=False
        )
        states.append(load_model(str(finetune(config).folder)).model.state_dict())
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_an_encoder_alone_is_refused(tmp_path) -> None:
    with pytest.raises(ConfigError, match="needs a LLaVA-style model with a vision tower"):
        finetune(FinetuneConfig(out=str(tmp_path / "x"), start="organism-ssl", progress=False))
