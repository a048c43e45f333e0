"""The built-in organism: shipped weights, held-out quality, training code, card, CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from analyses.cli import main
from caches import CacheReader, extract
from interp import OutputExistsError, StimulusSpec, generate, load_model
from interp.organism import ORGANISM_DIR
from interp.organism.card import TARGETS, read_card_metrics
from interp.organism.evaluation import EVAL_IMAGES, EVAL_SEED, evaluate
from interp.organism.training import OrganismTrainConfig, pixels_to_tensor, stage_seed, train
from interp.stimuli.questions import ANSWERS, POSITION_MARGIN, QUESTION_TYPES, ask, questions_for
from probes import sweep

SLACK_SE = 3.5  # sampling slack: standard errors of an accuracy on the held-out set here


def test_ships_inside_the_package_and_loads_offline(organism) -> None:
    assert organism.source == str(ORGANISM_DIR)
    assert type(organism.model).__name__ == "LlavaForConditionalGeneration"
    assert type(organism.processor).__name__ == "LlavaProcessor"
    assert organism.adapter.family == "LLaVA-1.5"
    size = sum(f.stat().st_size for f in ORGANISM_DIR.iterdir())
    assert size <= 20 * 2**20, f"{size / 2**20:.1f} MB"
    assert (ORGANISM_DIR / "README.md").read_text().startswith("# vlm-interp organism")


def test_held_out_accuracy_meets_what_the_card_claims(organism) -> None:
    """Each type reaches its target (or, where the card reports it missed, the card's
    measured accuracy), minus sampling slack, on a fresh held-out set."""
    claimed = read_card_metrics(ORGANISM_DIR).set_index("question")
    metrics = evaluate(organism, n_images=200, seed=EVAL_SEED + 1).set_index("question")
    for question, target in TARGETS.items():
        row, card = metrics.loc[question], claimed.loc[question]
        expected = min(target, card.accuracy)
        slack = SLACK_SE * np.sqrt(expected * (1 - expected) / row.n)
        assert row.accuracy >= expected - slack, (question, row.accuracy, expected, slack)
        if card.accuracy > card.chance + 0.2:  # where the card claims skill, it is there
            assert row.accuracy > row.chance + 0.1, (question, row.accuracy, row.chance)


@pytest.mark.parametrize(("key", "max_objects"), [("metrics", 4), ("single_object_metrics", 1)])
def test_card_numbers_are_what_eval_measures(organism, key, max_objects) -> None:
    recorded = read_card_metrics(ORGANISM_DIR, key)
    measured = evaluate(organism, n_images=EVAL_IMAGES, seed=EVAL_SEED, max_objects=max_objects)
    pd.testing.assert_frame_equal(recorded, measured, check_exact=False, atol=1e-12)
    card = (ORGANISM_DIR / "README.md").read_text()
    for row in measured.itertuples():
        assert f"| {row.question} | {row.accuracy:.3f} | {row.chance:.3f} |" in card


def test_probes_on_the_organism_beat_chance_where_expected(organism, tmp_path) -> None:
    stimuli = generate(StimulusSpec(n_images=150, seed=99))
    path = extract(
        organism,
        stimuli,
        tmp_path / "c.h5",
        sites=["vision.0", "projector", "lm.5"],
        conditions=["baseline"],
        progress=False,
    )
    with CacheReader(path) as reader:
        table = sweep(reader, attributes=["color", "count"], selections=["mean"], progress=False)
    color = table[(table.attribute == "color")].set_index("site")
    assert color.loc["vision.0"].value > color.loc["vision.0"].chance + 0.25
    assert color.loc["vision.0"].selectivity > 0.15  # above its own control task
    count = table[(table.attribute == "count")].set_index("site")
    assert count.loc["projector"].value > count.loc["projector"].chance + 0.15


def test_a_short_training_run_lowers_the_loss(tmp_path) -> None:
    config = OrganismTrainConfig(
        out=str(tmp_path / "m"),
        hidden_size=32,
        vision_layers=1,
        lm_layers=1,
        clip_steps=12,
        clip_batch=32,
        clip_lr=3e-3,
        vqa_steps=25,
        vqa_batch=16,
        vqa_lr=3e-3,
        warmup=3,
        progress=False,
    )
    result = train(config)
    for stage in ("contrastive", "vqa"):
        losses = result.history[result.history.stage == stage].loss.to_numpy()
        assert losses[-4:].mean() < losses[:4].mean() - 0.1, (stage, losses)
    model = load_model(str(result.folder))  # saved with save_pretrained, loads back
    assert model.adapter.n_lm_layers == 1
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        train(config)


def test_training_pixels_equal_the_processor(organism) -> None:
    images = generate(StimulusSpec(n_images=3, seed=5)).images
    ours = pixels_to_tensor(images, organism.processor)
    theirs = organism.processor.image_processor(list(images), return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_questions_have_one_right_answer() -> None:
    stimuli = generate(StimulusSpec(n_images=200, seed=3))
    qas = questions_for(stimuli, np.random.default_rng(0))
    assert {qa.kind for qa in qas} == set(QUESTION_TYPES)
    for qa in qas:
        assert qa.answer in ANSWERS[qa.kind]
    # A description that fits two objects is never used.
    twins = [  # two circles: "the circle" fits both, "the small circle" one
        {"shape": 0, "color": 0, "size": 0, "x": 10.0, "y": 10.0},
        {"shape": 0, "color": 1, "size": 2, "x": 50.0, "y": 50.0},
    ]
    qa = ask(twins, 0, "color", 64)
    assert qa is not None and qa.question == "what color is the small circle ?"
    assert qa.answer == "red"
    assert ask(twins, 1, "shape", 64).question == "what shape is the green object ?"
    with_same = [dict(twins[0]), dict(twins[0], x=50.0, y=50.0)]
    assert ask(with_same, 0, "color", 64) is None  # identical but for position
    centred = [dict(twins[0], x=32.0 + POSITION_MARGIN * 64 / 2)]
    assert ask(centred, 0, "left_right", 64) is None
    assert ask(centred, 0, "top_bottom", 64).answer == "top"


def test_eval_seed_is_outside_the_training_streams() -> None:
    for seed in range(3):
        for stage in (1, 2):
            assert not stage_seed(seed, stage, 0) <= EVAL_SEED <= stage_seed(seed, stage, 10**6 - 1)


def test_cli_eval_prints_the_table(capsys) -> None:
    assert main(["organism", "eval", "--n-images", "12"]) == 0
    out = capsys.readouterr().out
    for question in QUESTION_TYPES:
        assert question in out
    assert "accuracy" in out and "chance" in out


def test_missing_organism_weights_say_how_to_rebuild(tmp_path, monkeypatch) -> None:
    import interp.models.loading as loading
    from interp import ModelLoadError

    shipped = {name: (tmp_path / name, command) for name, (_, command) in loading.SHIPPED.items()}
    monkeypatch.setattr(loading, "SHIPPED", shipped)
    with pytest.raises(ModelLoadError, match="interp organism train --out"):
        load_model("organism")
    with pytest.raises(ModelLoadError, match="interp organism train-ssl --out"):
        load_model("organism-ssl")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hidden_size": 48}, "multiple of 32"),
        ({"lm_layers": 0}, "lm_layers must be >= 1"),
        ({"vqa_steps": 0}, "vqa_steps must be >= 1, got 0"),
    ],
)
def test_bad_training_configs_are_refused(kwargs, message) -> None:
    from interp import ConfigError

    with pytest.raises(ConfigError, match=message):
        OrganismTrainConfig(**kwargs)


def test_cli_eval_refuses_bad_input(capsys) -> None:
    assert main(["organism", "eval", "--n-images", "0"]) == 2
    assert "--n-images must be >= 1" in capsys.readouterr().err
