"""interp organism finetune: vocabulary growth, the pixel task, and a short run."""

from __future__ import annotations

import os
import re
import shutil
import stat

import numpy as np
import pytest
import torch

from analyses.cli import main
from interp import ConfigError, DiskFullError, StimulusSpec, generate, load_model
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
        batch_size=16,
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

    frozen = FinetuneConfig(out=str(tmp_path / "frozen"), steps=2, batch_size=4, progress=False)
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
    argv += ["--batch-size", "4", "--pixel-task", "--eval-images", "50", "--no-progress"]
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
            out=str(tmp_path / name), complexity=4, steps=1, batch_size=2, progress=False
        )
        states.append(load_model(str(finetune(config).folder)).model.state_dict())
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_an_encoder_alone_is_refused(tmp_path) -> None:
    with pytest.raises(ConfigError, match="needs a LLaVA-style model with a vision tower"):
        finetune(FinetuneConfig(out=str(tmp_path / "x"), start="organism-ssl", progress=False))


def test_a_model_folder_appears_whole_or_not_at_all(tmp_path, monkeypatch, capsys) -> None:
    """A run stopped between the weights and the card leaves no model folder (only a
    partial one, which the same command starts over, saying so); a finished folder's
    files are readable by others; a folder with a config and no weights is named so."""
    import interp.organism.build as build

    out = tmp_path / "tuned"
    argv = ["organism", "finetune", "--out", str(out), "--steps", "1", "--batch-size", "2",
            "--eval-images", "20", "--no-progress"]  # fmt: skip

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(build, "write_finetune_card", stopped)
        assert main(argv) == 130
    assert not out.exists() and (tmp_path / "tuned.partial" / "model.safetensors").is_file()
    capsys.readouterr()
    assert main(argv) == 0
    assert "starting over:" in capsys.readouterr().err
    assert (out / "README.md").is_file() and not (tmp_path / "tuned.partial").exists()
    mask = os.umask(0)
    os.umask(mask)
    for path in out.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask, path.name
    (out / "model.safetensors").unlink()  # as a run of an older version left it
    assert main(argv) == 2
    assert "holds a model's config but no weights" in capsys.readouterr().err


def test_finetune_refusals_come_before_any_work(tmp_path, monkeypatch, capsys) -> None:
    import interp.organism.finetune as finetune_module
    from interp.organism.folders import check_model_folder

    def no_training(*args, **kwargs):
        raise AssertionError("refused before the model is loaded")

    monkeypatch.setattr("interp.models.loading.load_model", no_training)
    monkeypatch.setattr(finetune_module.torch.cuda, "is_available", lambda: False)
    base = ["organism", "finetune", "--steps", "1", "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "a"), "--device-map", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "--device-map cuda needs a CUDA GPU, but torch sees none" in err
    assert "leave out --device-map to run on the CPU" in err
    start = tmp_path / "start"
    start.mkdir()
    (start / "config.json").write_text("{}")
    (start / "model.safetensors").write_bytes(b"weights")
    assert main([*base, "--from", str(start), "--out", str(start), "--overwrite"]) == 2
    assert "is the model this run starts from" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "b"), "--pixel-questions", "0"]) == 2
    assert "--pixel-questions must be >= 1" in capsys.readouterr().err
    monkeypatch.setattr("shutil.disk_usage", lambda path: shutil._ntuple_diskusage(1, 1, 1))
    with pytest.raises(DiskFullError, match=r"has 0.0 MiB free, and the model needs about"):
        check_model_folder(tmp_path / "c", False, str(start))


def test_a_disk_that_fills_while_saving_leaves_nothing(tmp_path, monkeypatch) -> None:
    import errno

    import interp.organism.tiny_llava as tiny

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tiny, "save_portable", full)
    config = FinetuneConfig(out=str(tmp_path / "x"), steps=1, batch_size=2, progress=False)
    with pytest.raises(DiskFullError, match="its disk is full; free space there or choose"):
        finetune(config)
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.partial").exists()
