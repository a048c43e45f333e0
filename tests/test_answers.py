"""The model's answers under conditions: scored against plain forward passes, summarised
against hand counts, from stimuli, a label table and a cache, through the command line."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from analyses.answers import summarise_answers
from analyses.cli import main
from interp import ConfigError, StimulusSpec, generate
from interp.conditions import drop_conditions, window_conditions
from interp.experiments.answers import answer_token_ids, score_answers
from interp.sources import LabelTable, write_label_folder


@pytest.fixture(scope="module")
def stimuli(organism):
    size = organism.adapter.native_image_size
    return generate(StimulusSpec(n_images=12, image_size=size, seed=21))


def test_baseline_answers_equal_plain_forward_passes(organism, stimuli) -> None:
    """Every row of the baseline against the model called directly on the processor's
    inputs for that one question (no nnsight, no batching, no padding)."""
    rows = score_answers(organism, stimuli, batch_size=5)
    questions = stimuli.questions()
    assert len(rows) == len(questions) and set(rows.condition) == {"baseline"}
    tokenizer = organism.processor.tokenizer
    by_question = rows.set_index(["image", "question"])
    for q in questions[::3]:
        prompt = organism.adapter.default_prompt(q.question)
        inputs = organism.processor(
            images=[stimuli.image(q.image)], text=[prompt], return_tensors="pt"
        )
        with torch.no_grad():
            logits = organism.model(**inputs).logits[0, -1].double()  # (vocab,)
        right = tokenizer.convert_tokens_to_ids(q.answer)
        wrong = [tokenizer.convert_tokens_to_ids(w) for w in q.options if w != q.answer]
        row = by_question.loc[(q.image, q.question)]
        assert row["predicted"] == tokenizer.convert_ids_to_tokens(int(logits.argmax()))
        assert bool(row["correct"]) == (int(logits.argmax()) == right)
        assert row["logprob"] == pytest.approx(float(logits.log_softmax(-1)[right]), abs=1e-4)
        margin = float(logits[right] - logits[wrong].max())
        assert row["margin"] == pytest.approx(margin, abs=1e-4)


def test_cutting_the_image_off_everywhere_makes_answers_blind(organism, stimuli) -> None:
    """mask over every LM layer: the count question, worded the same for every image, gets
    the same log-probabilities whatever the image; at baseline it does not."""
    last = organism.adapter.n_lm_layers - 1
    rows = score_answers(organism, stimuli, conditions=[f"mask:0-{last}"])
    count = rows[rows.question_type == "count"]
    blind = count[count.condition == f"mask:0-{last}"]
    seen = count[count.condition == "baseline"]
    assert blind.groupby("answer")["logprob"].agg(np.ptp).max() < 1e-4
    assert seen.groupby("answer")["logprob"].agg(np.ptp).max() > 1e-2
    assert blind["predicted"].nunique() == 1


def test_summary_against_hand_counts() -> None:
    rows = pd.DataFrame(
        {
            "condition": ["baseline"] * 5 + ["shuffle"] * 5,
            "image": [0, 1, 2, 3, 3] * 2,
            "question_type": ["color"] * 4 + ["count"] + ["color"] * 4 + ["count"],
            "answer": ["red", "red", "blue", "red", "two"] * 2,
            "correct": [True, True, False, True, True, False, True, False, False, True],
            "logprob": [-0.1, -0.2, -2.0, -0.3, -0.5, -1.0, -0.2, -3.0, -2.0, -0.1],
            "margin": [1.0, 2.0, -1.0, 0.5, 3.0, -1.0, 1.0, -2.0, -1.5, 2.0],
        }
    )
    table = summarise_answers(rows, n_boot=200, attributes={"color": "color"})
    color = table.set_index(["condition", "question_type"]).loc[("baseline", "color")]
    assert color["accuracy"] == 0.75 and color["n"] == 4
    assert color["chance"] == 0.75  # three of four right answers are red
    assert color["logprob"] == pytest.approx(-0.65) and color["margin"] == pytest.approx(0.625)
    assert color["ci_low"] <= 0.75 <= color["ci_high"] and color["attribute"] == "color"
    shuffled = table.set_index(["condition", "question_type"]).loc[("shuffle", "color")]
    assert shuffled["accuracy"] == 0.25
    with pytest.raises(ConfigError, match="lack columns"):
        summarise_answers(rows.drop(columns="margin"))


def test_condition_sweeps() -> None:
    assert window_conditions(6, 2) == ["mask:0-1", "mask:1-2", "mask:2-3", "mask:3-4", "mask:4-5"]
    assert window_conditions(3, 3) == ["mask:0-2"]
    assert drop_conditions([1, 8], ["norm"]) == ["drop:norm:1", "drop:norm:8"]
    assert len(drop_conditions([4])) == 4
    with pytest.raises(ConfigError, match="1 to 6 LM layers"):
        window_conditions(6, 7)


def test_answer_tokens_must_differ_in_their_first_piece() -> None:
    class Pieces:
        def __call__(self, word, add_special_tokens=False):
            return {"input_ids": [len(word[:2]) * 100 + ord(word[0]), 7]}

    assert answer_token_ids(Pieces(), ["red", "blue"]) == {"red": 314, "blue": 298}
    with pytest.raises(ConfigError, match="'red' and 'rose' start with the same token"):
        answer_token_ids(Pieces(), ["red", "rose"])


def test_a_label_tables_questions_are_answered(organism, stimuli, tmp_path) -> None:
    """Own data: question / answer / question_type columns of labels.csv."""
    table = write_label_folder(stimuli, tmp_path / "own")
    frame = pd.read_csv(table)
    frame["question"] = "how many objects are there ?"
    names = ["one", "two", "three", "four"]
    frame["answer"] = [names[len(objs) - 1] for objs in stimuli.objects]
    frame["question_type"] = "count"
    frame.loc[0, "question"] = None  # a row without a question is skipped
    frame.to_csv(table, index=False)
    data = LabelTable(table)
    questions = data.questions()
    assert len(questions) == len(stimuli) - 1 and questions[0].image == 1
    assert questions[0].attribute == "count" and set(questions[0].options) <= set(names)
    rows = score_answers(organism, data, conditions=["shuffle"])
    reference = score_answers(organism, stimuli, questions=questions, conditions=["shuffle"])
    pd.testing.assert_frame_equal(rows, reference)  # the same pixels give the same answers


def test_answers_command_from_a_cache_and_the_figures(organism, tmp_path, capsys) -> None:
    cache = tmp_path / "c.h5"
    argv = ["extract", "--out", str(cache), "--n-images", "12", "--seed", "3", "--no-progress"]
    assert main([*argv, "--sites", "lm.0", "lm.5", "--conditions", "baseline"]) == 0
    out = tmp_path / "answers"
    argv = ["answers", str(cache), "--out", str(out), "--windows", "3", "--no-progress"]
    assert main([*argv, "--drop-ks", "2", "8", "--drop-policies", "random", "--n-boot", "50"]) == 0
    printed = capsys.readouterr().out
    assert "mask:0-2" in printed and "drop:random:8" in printed
    summary = pd.read_csv(out / "answers.csv")
    rows = pd.read_csv(out / "answer_rows.csv")
    assert list(dict.fromkeys(summary.condition))[:3] == ["baseline", "shuffle", "lower_mask"]
    # the token-dropping curves in redundancy.csv are the summary's drop and baseline rows
    argv = ["redundancy", str(cache), "--answers", str(out / "answers.csv"), "--n-boot", "5"]
    assert main([*argv, "--out", str(tmp_path / "red")]) == 0
    curves = pd.read_csv(tmp_path / "red" / "redundancy.csv").query("site == 'answers'")
    kept = summary[summary.condition.isin(["baseline", "drop:random:2", "drop:random:8"])]
    assert len(curves) == len(kept) and set(curves.metric) == {"answer_accuracy"}
    np.testing.assert_allclose(
        curves.set_index(["condition", "attribute"])["value"].sort_index(),
        kept.set_index(["condition", "question_type"])["accuracy"].sort_index(),
    )
    # The cache's images again: the stimuli of its spec, answered by the same model.
    again = generate(StimulusSpec(n_images=12, image_size=64, seed=3))
    direct = score_answers(organism, again, conditions=["mask:1-3"])
    mine = rows[rows.condition == "mask:1-3"].reset_index(drop=True)
    np.testing.assert_allclose(
        mine["logprob"], direct[direct.condition == "mask:1-3"]["logprob"], atol=1e-5
    )
    probes = tmp_path / "p.csv"
    assert main(["probe", str(cache), "--out", str(probes), "--n-splits", "2", "--n-boot", "20",
                 "--selections", "mean", "--no-progress"]) == 0  # fmt: skip
    figures = tmp_path / "figures"
    assert main(["plot", str(probes), str(out / "answers.csv"), "--out", str(figures)]) == 0
    made = {p.name for p in figures.iterdir()}
    assert {"decodable_vs_used.html", "layer_window_sweep.html", "token_dropping.html"} <= made
    capsys.readouterr()
    assert main(["answers", str(tmp_path / "nowhere.h5"), "--out", str(out)]) == 2
    assert "does not exist; pass a cache" in capsys.readouterr().err
    assert main(["answers", "--out", str(out), "--no-progress", "--n-images", "4"]) == 2
    err = capsys.readouterr().err
    assert "answers.csv" in err and "--overwrite" in err  # never replaced silently


def test_the_sweep_figures_read_the_condition_names() -> None:
    """Windows and drops are parsed from the condition names; the window sweep shows the
    windows of its width only (a whole-depth mask named beside it is not one of them)."""
    from analyses.answer_figures import drop_curves, window_sweep
    from analyses.answers import drop_table, window_table

    conditions = ["baseline", "mask:0-1", "mask:1-2", "mask:2-3", "mask:0-3", "drop:norm:4"]
    accuracy = [0.8, 0.5, 0.7, 0.8, 0.2, 0.6]
    summary = pd.DataFrame(
        {
            "condition": conditions, "question_type": "color", "attribute": "color",
            "accuracy": accuracy, "ci_low": 0.0, "ci_high": 1.0, "chance": 0.2,
            "logprob": -1.0, "margin": 0.0, "n": 10,
        }
    )  # fmt: skip
    windows = window_table(summary)
    assert list(windows.window) == ["0-1", "1-2", "2-3", "0-3"]
    assert list(windows["drop"].round(2)) == [0.3, 0.1, 0.0, 0.6]
    figure = window_sweep(summary)
    assert list(figure.data[0].x) == ["0-1", "1-2", "2-3"]
    assert "2-layer windows" in figure.layout.title.text
    drops = drop_table(summary)
    assert drops[["policy", "k"]].values.tolist() == [["norm", 4]]
    curves = drop_curves(summary)
    assert [t.name for t in curves.data] == ["norm", "every token", "chance"]
    with pytest.raises(ConfigError, match="no mask:A-B rows"):
        window_sweep(summary[summary.condition == "baseline"])


def test_the_new_settings_refuse_what_cannot_work(organism, tmp_path) -> None:
    """Each refusal names the parameter and what to do."""
    from analyses.commands import AnswersConfig, PatchConfig, RunConfig
    from interp import InterventionError, make_intervention
    from interp.sources import ArrayImages

    images = np.zeros((2, 64, 64, 3), dtype=np.uint8)
    with pytest.raises(ConfigError, match="has no questions.*'question' and 'answer' columns"):
        score_answers(organism, ArrayImages(images))
    with pytest.raises(ConfigError, match="give the images once"):
        AnswersConfig(source="c.h5", data="folder")
    with pytest.raises(ConfigError, match="windows must be >= 1"):
        RunConfig(windows=0)
    with pytest.raises(ConfigError, match="give drop_ks too"):
        AnswersConfig(drop_policies=["norm"])
    with pytest.raises(ConfigError, match="unknown policy 'loud'"):
        AnswersConfig(drop_ks=[4], drop_policies=["loud"])
    with pytest.raises(
        ConfigError, match="twin must be one of color, shape, mirror, flip, count, got 'size'"
    ):
        PatchConfig(twin="size")
    with pytest.raises(ConfigError, match="method must be one of"):
        PatchConfig(method="guess")
    patch = make_intervention("patch:projector")
    with pytest.raises(InterventionError, match="no pairing yet; call prepare"):
        patch.actions(organism.adapter, organism.adapter.build_inputs(images, "<image>\nhi"))


def test_answers_the_model_has_no_word_for_are_left_out_with_a_warning(organism) -> None:
    busy = generate(StimulusSpec(n_images=6, seed=2, complexity=5))  # 5-8 objects
    questions = busy.questions()
    counts = [q for q in questions if q.kind == "count"]
    assert counts and all(int(q.answer) >= 5 for q in counts)
    with pytest.warns(UserWarning, match=f"{len(counts)} of {len(questions)} questions left out"):
        rows = score_answers(organism, busy)
    assert "count" not in set(rows["question_type"])
    assert len(rows) == len(questions) - len(counts)
    tuned = generate(StimulusSpec(n_images=6, seed=2)).questions()
    plain = [q for q in tuned if q.kind == "count"]
    assert plain[0].options == ("1", "2", "3", "4"), "a set's counts are its own"
    with pytest.raises(ConfigError, match="no question can be scored"):
        score_answers(organism, busy, questions=counts)
