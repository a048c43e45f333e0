"""Blind-pair mining: image embeddings of each family, and the blockwise search against
a brute-force one."""

from __future__ import annotations

import itertools
import json

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import transformers
from tiny_vlms import build_encoder
from transformers import AutoModel

from analyses.blind_pairs import differing_attributes, mine_pairs
from caches.embeddings import cached_embeddings
from interp import ConfigError, StimulusSpec, generate, load_model
from interp.experiments.embeddings import embed_batch, embed_images

PREFIX = {"clip": 1, "siglip": 0, "dinov2": 1, "dinov2_registers": 3}


@pytest.fixture(scope="module")
def images():
    return generate(StimulusSpec(n_images=5, image_size=32, seed=7)).images


@pytest.mark.parametrize("kind", list(PREFIX))
def test_embeddings_are_each_checkpoints_own(kind, images, tmp_path) -> None:
    """``image``: the pooled output a fresh copy of the checkpoint returns (SigLIP's head,
    DINOv2's normed CLS, CLIP's post-norm CLS); ``mean``: its last hidden state's patch
    tokens, averaged."""
    torch.manual_seed(0)
    folder = build_encoder(kind, tmp_path / kind)
    loaded = load_model(folder)
    reference = AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        out = reference(**loaded.adapter.build_inputs(images, ""))
    torch.testing.assert_close(embed_batch(loaded, images, "image"), out.pooler_output)
    patches = out.last_hidden_state[:, PREFIX[kind] :]  # (batch, 16, d)
    torch.testing.assert_close(embed_batch(loaded, images, "mean"), patches.mean(1))


def test_clip_with_a_projection_embeds_as_get_image_features(images, tmp_path) -> None:
    torch.manual_seed(0)
    vision = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
    config = transformers.CLIPConfig(
        vision_config={**vision, "intermediate_size": 64, "image_size": 32, "patch_size": 8},
        text_config={**vision, "intermediate_size": 64},
        projection_dim=24,
    )
    model = transformers.CLIPModel(config).eval()
    model.save_pretrained(tmp_path)
    transformers.CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path))
    inputs = loaded.adapter.build_inputs(images, "")
    with torch.no_grad():
        expected = model.get_image_features(pixel_values=inputs["pixel_values"])
    expected = getattr(expected, "pooler_output", expected)  # a tensor, or an output
    got = embed_batch(loaded, images, "image")
    assert got.shape == (5, 24)
    torch.testing.assert_close(got, expected)


def test_a_llavas_tower_embeds_its_images(loaded, stimuli) -> None:
    """The LLaVA's CLIP tower, called on its own through Hugging Face's module."""
    inputs = loaded.adapter.build_inputs(stimuli.images, loaded.adapter.default_prompt("x"))
    tower = loaded.model.model.vision_tower if hasattr(loaded.model, "model") else None
    tower = tower if tower is not None else loaded.model.vision_tower
    with torch.no_grad():
        expected = tower(pixel_values=inputs["pixel_values"]).pooler_output
    torch.testing.assert_close(embed_images(loaded, stimuli, progress=False), expected.numpy())


def test_mixed_sizes_embed_as_each_image_alone(tmp_path) -> None:
    torch.manual_seed(0)
    loaded = load_model(build_encoder("dinov2", tmp_path / "d"))
    data = generate(StimulusSpec(n_images=4, image_sizes=(24, 40), seed=1))
    together = embed_images(loaded, data, batch_size=4, progress=False)
    for i in range(4):
        h, w = data.sizes[i]
        alone = embed_batch(loaded, data.pixels(np.array([i]))[:, :h, :w]).numpy()
        np.testing.assert_allclose(together[i], alone[0], rtol=1e-5, atol=1e-6)


def _brute_force(a, b, ta, tb):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return {
        (i, j): (float(a[i] @ a[j]), float(b[i] @ b[j]))
        for i, j in itertools.combinations(range(len(a)), 2)
        if a[i] @ a[j] > ta and b[i] @ b[j] < tb
    }


@pytest.mark.parametrize("block", [1, 7, 60, None])
def test_mining_equals_a_brute_force_search(block, rng) -> None:
    a = rng.normal(size=(60, 3)) + np.array([3.0, 0, 0])  # mostly alike under a
    b = rng.normal(size=(60, 16))  # mostly apart under b
    expected = _brute_force(a, b, 0.95, 0.1)
    assert 20 < len(expected) < 60 * 59 // 2  # a search with something to find
    pairs = mine_pairs(a, b, 0.95, 0.1, block=block, device="cpu")
    assert list(pairs.columns) == ["i", "j", "cos_a", "cos_b"]
    assert set(zip(pairs.i, pairs.j, strict=True)) == set(expected)
    for row in pairs.itertuples():
        np.testing.assert_allclose((row.cos_a, row.cos_b), expected[(row.i, row.j)], atol=1e-5)
    assert (np.diff(pairs.cos_a.to_numpy()) <= 0).all(), "most alike under a first"


def test_mining_refuses_bad_input_and_names_differences() -> None:
    with pytest.raises(ConfigError, match="same images"):
        mine_pairs(np.ones((3, 2)), np.ones((4, 2)))
    with pytest.raises(ConfigError, match="cosines in"):
        mine_pairs(np.ones((3, 2)), np.ones((3, 2)), threshold_a=2)
    with pytest.raises(ConfigError, match="not finite"):
        mine_pairs(np.full((3, 2), np.nan), np.ones((3, 2)))
    pairs = mine_pairs(np.ones((3, 2)), np.eye(3), 0.5, 0.5)  # every pair: alike, apart
    labels = {"color": np.array([0, 0, 1]), "shape": np.array([2, 3, 3])}
    assert list(differing_attributes(pairs, labels)) == ["shape", "color;shape", "color"]


def test_embeddings_are_cached_while_their_settings_hold(tmp_path) -> None:
    calls = []

    def compute(value):
        calls.append(value)
        return np.full((3, 2), value, dtype=np.float32)

    path = tmp_path / "embeddings.h5"
    first = cached_embeddings(path, "a", {"model": "m", "data": {"n": 3}}, lambda: compute(1))
    again = cached_embeddings(path, "a", {"model": "m", "data": {"n": 3}}, lambda: compute(2))
    other = cached_embeddings(path, "a", {"model": "other", "data": {"n": 3}}, lambda: compute(3))
    assert calls == [1, 3] and (first == again).all() and (other == 3).all()


def test_interp_mine_writes_the_pairs_and_reuses_embeddings(tmp_path, monkeypatch, capsys) -> None:
    """`interp mine` between the organism's CLIP tower and a tiny DINOv2: pairs.csv equals
    a brute-force search over the embeddings it stored, each pair's differing attributes
    are its labels', and a rerun embeds nothing again."""
    import interp.experiments.embeddings as embeddings_module
    from analyses.cli import main
    from analyses.commands import mine_step

    torch.manual_seed(0)
    dino = build_encoder("dinov2", tmp_path / "dino")
    out = tmp_path / "mined"
    args = ["mine", "--encoder-b", dino, "--n-images", "40", "--threshold-a", "0.97",
            "--threshold-b", "0.99999", "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(out / "pairs.csv")
    assert list(table.columns) == ["i", "j", "image_i", "image_j", "cos_a", "cos_b", "differs"]
    assert f"{len(table)} blind pairs among 40 images" in printed and len(table) > 3
    assert (out / "blind_pairs.png").is_file()
    matched = pd.read_csv(out / "matched_pairs.csv")  # the control: one per blind pair
    assert matched.differs.fillna("").tolist() == (
        table.differs.fillna("").to_numpy()[matched.matched_to].tolist()
    )
    with h5py.File(out / "embeddings.h5", "r") as handle:
        a, b = handle["embeddings/a"][()], handle["embeddings/b"][()]
    assert set(zip(table.i, table.j, strict=True)) == set(_brute_force(a, b, 0.97, 0.99999))
    data = generate(StimulusSpec(n_images=40, image_size=64, seed=0))
    for row in table.itertuples():
        differs = {  # the categorical labels (a position differs in every pair)
            k for k in data.label_classes if data.labels[k][row.i] != data.labels[k][row.j]
        }
        assert set(str(row.differs).split(";")) - {"nan"} == differs

    def no_embedding(*args, **kwargs):
        raise AssertionError("the embeddings of the same images and encoders are reused")

    monkeypatch.setattr(embeddings_module, "embed_images", no_embedding)
    from analyses.commands import MineConfig

    again = mine_step(
        MineConfig(encoder_b=dino, n_images=40, threshold_a=0.97, threshold_b=0.99999,
                   out=str(out), overwrite=True, progress=False)
    )  # fmt: skip
    assert len(again.pairs) == len(table)
    with pytest.raises(ConfigError, match="encoder_b is required"):
        MineConfig(encoder_b=None)


def test_pair_accuracy_by_hand() -> None:
    """Three pairs, one two-option question per image: right/right, right/wrong,
    wrong/right. Per question 4 of 6 are right (0.67), per pair 1 of 3 (0.33); chance
    0.5 per question, 0.25 per pair. A second pattern asked of one image only counts no
    pair."""
    from analyses.paired import paired_accuracy

    pairs = pd.DataFrame({"i": [0, 2, 4], "j": [1, 3, 5]})
    rows = pd.DataFrame(
        {
            "condition": "baseline",
            "image": [0, 1, 2, 3, 4, 5, 0],
            "question_type": ["state"] * 6 + ["count"],
            "correct": [True, True, True, False, False, True, True],
        }
    )
    table = paired_accuracy(rows, pairs, {"state": 0.5, "count": 0.25}, n_boot=200)
    assert len(table) == 1  # "count" is asked of image 0 only: no pair has it on both
    row = table.iloc[0]
    assert row.pattern == "state" and row.n_pairs == 3 and row.n_questions == 6
    assert row.question_accuracy == pytest.approx(4 / 6)
    assert row.pair_accuracy == pytest.approx(1 / 3)
    assert row.question_chance == pytest.approx(0.5) and row.pair_chance == pytest.approx(0.25)
    assert row.pair_low <= 1 / 3 <= row.pair_high and row.pair_low >= 0
    patterned = paired_accuracy(
        rows, pairs.assign(pattern=["a", "b", "a"]), {"state": 0.5, "count": 0.25}
    )
    by_pattern = patterned.set_index("pattern")  # a pattern named by the pair: every question
    assert by_pattern.loc["a", "pair_accuracy"] == 0.5  # pair 0 (3 questions right), pair 2 not
    assert by_pattern.loc["a", "question_accuracy"] == pytest.approx(4 / 5)
    assert by_pattern.loc["b", "pair_accuracy"] == 0.0
    assert by_pattern.loc["a", "pair_chance"] == pytest.approx((0.5 * 0.5 * 0.25 + 0.25) / 2)


def test_mmvp_folder_reads_as_released(tmp_path) -> None:
    """MMVP's layout: Questions.csv (its 'lndex' header too) and 'MMVP Images/<i>.jpg';
    images two by two are pairs; each question keeps its own options."""
    from PIL import Image

    from interp.sources import open_source

    (tmp_path / "MMVP Images").mkdir()
    for i in range(1, 5):
        Image.new("RGB", (20 + i, 16), (10 * i, 0, 0)).save(tmp_path / "MMVP Images" / f"{i}.jpg")
    pd.DataFrame(
        {
            "lndex": [1, 2, 3, 4],
            "Question": ["Is the door open?"] * 2 + ["Which way does the dog face?"] * 2,
            "Options": ["(a) Open (b) Closed"] * 2 + ["(a) left (b) right"] * 2,
            "Correct Answer": ["(a)", "(b)", "(b)", "(a)"],
        }
    ).to_csv(tmp_path / "Questions.csv", index=False)
    data = open_source(tmp_path)
    assert len(data) == 4 and data.sizes.tolist() == [[16, 21], [16, 22], [16, 23], [16, 24]]
    questions = data.questions()
    assert [q.answer for q in questions] == ["Open", "Closed", "right", "left"]
    assert questions[0].options == ("Open", "Closed") and questions[3].options == ("left", "right")
    assert questions[0].question == "Is the door open? (a) Open (b) Closed"
    assert len({q.kind for q in questions}) == 4  # each its own options
    assert data.pairs()[["i", "j"]].values.tolist() == [[0, 1], [2, 3]]
    assert data.names()[2].endswith("MMVP Images/3.jpg")
    broken = tmp_path / "broken"
    (broken / "MMVP Images").mkdir(parents=True)
    pd.DataFrame(
        {"Index": [1], "Question": ["?"], "Options": ["yes or no"], "Correct Answer": ["(a)"]}
    ).to_csv(broken / "Questions.csv", index=False)
    with pytest.raises(ConfigError, match="row 2: options 'yes or no'.*not in MMVP's form"):
        open_source(broken)


def test_pairs_eval_on_mined_stimuli(tmp_path) -> None:
    """pairs-eval reads the stimuli a pairs.csv was mined from (its pairs.json), and its
    table is what the answers it wrote give, counted by hand."""
    from analyses.commands import PairsEvalConfig, pairs_eval_step

    folder = tmp_path / "mined"
    folder.mkdir()
    pd.DataFrame({"i": [0, 2, 4], "j": [1, 3, 0]}).to_csv(folder / "pairs.csv", index=False)
    spec = StimulusSpec(n_images=6, seed=3)
    (folder / "pairs.json").write_text(
        json.dumps({"data": {"source": "stimuli", "spec": spec.to_dict()}})
    )
    result = pairs_eval_step(
        PairsEvalConfig(pairs=str(folder / "pairs.csv"), out=str(tmp_path / "pe"), n_boot=50,
                        progress=False)
    )  # fmt: skip
    answers = pd.read_csv(result.paths["pair_answers"])
    assert set(answers.image) == {0, 1, 2, 3, 4}  # image 5 is in no pair
    for row in result.table.itertuples():
        both = []
        for i, j in ((0, 1), (2, 3), (4, 0)):
            asked = answers[answers.image.isin([i, j]) & (answers.question_type == row.pattern)]
            if asked.image.nunique() == 2:
                both.append(bool(asked.correct.all()))
        assert row.n_pairs == len(both) and row.pair_accuracy == pytest.approx(np.mean(both))
    with pytest.raises(ConfigError, match="give pairs"):
        PairsEvalConfig()


def test_matched_pairs_differ_as_their_blind_pair_does(rng) -> None:
    from analyses.blind_pairs import matched_pairs

    labels = {"color": rng.integers(0, 3, 40), "shape": rng.integers(0, 2, 40)}
    pairs = pd.DataFrame({"i": [0, 1, 2, 3], "j": [5, 6, 7, 8]})
    pairs["differs"] = differing_attributes(pairs, labels)
    matched = matched_pairs(pairs, labels, seed=1)
    assert list(matched.columns) == ["i", "j", "differs", "matched_to"]
    assert len(matched) == 4 and matched.matched_to.tolist() == [0, 1, 2, 3]
    assert (matched.differs.to_numpy() == pairs.differs.to_numpy()[matched.matched_to]).all()
    chosen = set(zip(matched.i, matched.j, strict=True))
    assert len(chosen) == 4 and not chosen & set(zip(pairs.i, pairs.j, strict=True))
    assert (matched.i < matched.j).all()


def test_pairs_eval_on_own_images_with_question_columns(tmp_path) -> None:
    """The stimuli written as a label folder whose table carries each image's color
    question: pairs-eval answers them as it answers the stimuli's own questions."""
    from analyses.commands import PairsEvalConfig, pairs_eval_step
    from interp.sources import write_label_folder

    spec = StimulusSpec(n_images=6, seed=3)
    stimuli = generate(spec)
    table = write_label_folder(stimuli, tmp_path / "own")
    asked = {q.image: q for q in stimuli.questions() if q.kind == "color"}
    frame = pd.read_csv(table)
    frame["question"] = [asked[i].question for i in range(6)]
    frame["answer"] = [asked[i].answer for i in range(6)]
    frame["question_type"] = "color"
    frame.to_csv(table, index=False)
    pd.DataFrame({"i": [0, 2, 4], "j": [1, 3, 5]}).to_csv(tmp_path / "pairs.csv", index=False)
    own = pairs_eval_step(
        PairsEvalConfig(pairs=str(tmp_path / "pairs.csv"), data=str(tmp_path / "own"),
                        out=str(tmp_path / "pe"), n_boot=20, progress=False)
    )  # fmt: skip
    folder = tmp_path / "mined"
    folder.mkdir()
    pd.DataFrame({"i": [0, 2, 4], "j": [1, 3, 5]}).to_csv(folder / "pairs.csv", index=False)
    (folder / "pairs.json").write_text(
        json.dumps({"data": {"source": "stimuli", "spec": spec.to_dict()}})
    )
    builtin = pairs_eval_step(
        PairsEvalConfig(pairs=str(folder / "pairs.csv"), out=str(tmp_path / "pe2"), n_boot=20,
                        progress=False)
    )  # fmt: skip
    mine = own.answers.sort_values("image")["correct"].tolist()
    theirs = builtin.answers[builtin.answers.question_type == "color"].sort_values("image")
    assert len(mine) == 6 and mine == theirs["correct"].tolist()
    assert own.table.pair_accuracy.iloc[0] == pytest.approx(
        builtin.table.set_index("pattern").loc["color", "pair_accuracy"]
    )


def test_mining_and_pairs_eval_on_every_edge(tmp_path, capsys) -> None:
    """No pair at all is a result (empty tables, said so); an overwrite leaves no earlier
    table behind; unknown attributes are refused; pairs-eval finds each pair's images by
    name in reordered data, refuses pairs of one image or outside the data, and says what
    an empty or own-data pairs table lacks."""
    from analyses.cli import main
    from interp.sources import write_label_folder

    dino = build_encoder("dinov2", tmp_path / "dino")
    out = tmp_path / "mined"
    mine = ["mine", "--encoder-b", dino, "--n-images", "40", "--out", str(out), "--no-progress"]
    assert main([*mine, "--threshold-a", "0.97", "--threshold-b", "0.99999"]) == 0
    found = pd.read_csv(out / "pairs.csv")
    assert len(found) > 3
    capsys.readouterr()
    assert main([*mine, "--attributes", "foo", "--overwrite"]) == 2
    assert "attributes ['foo'] are not categorical labels" in capsys.readouterr().err
    assert (out / "pairs.csv").is_file()  # a refusal removes nothing
    none = tmp_path / "none"
    argv = ["mine", "--encoder-b", dino, "--n-images", "40", "--out", str(none), "--no-progress"]
    assert main([*argv, "--threshold-a", "0.9999", "--threshold-b", "-0.99"]) == 0
    assert "0 blind pairs among 40 images" in capsys.readouterr().out
    assert pd.read_csv(none / "pairs.csv").empty and pd.read_csv(none / "matched_pairs.csv").empty
    # pairs-eval: an empty table, pairs of own images without them, broken rows
    evaluate = ["pairs-eval", "--no-progress", "--n-boot", "20"]
    assert main([*evaluate, "--pairs", str(none / "pairs.csv"), "--out", str(tmp_path / "e")]) == 2
    assert "holds no pairs" in capsys.readouterr().err
    data = generate(StimulusSpec(n_images=40, image_size=64, seed=0))
    folder = write_label_folder(data, tmp_path / "own").parent
    table = pd.read_csv(folder / "labels.csv")
    table = table.assign(question="what color is the shape ?", answer=table["color"])
    table.iloc[::-1].to_csv(folder / "labels.csv", index=False)  # the same images, reordered
    own = tmp_path / "own-mined"
    argv = ["mine", "--encoder-b", dino, "--data", str(folder), "--out", str(own)]
    assert main([*argv, "--threshold-a", "0.97", "--threshold-b", "0.99999", "--no-progress"]) == 0
    assert main([*evaluate, "--pairs", str(own / "pairs.csv"), "--out", str(tmp_path / "e")]) == 2
    assert "pairs your own images" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "pairs.json").write_bytes((out / "pairs.json").read_bytes())
    for rows, message in (([[3, 3]], "row 1 pairs image 3 with itself"),
                          ([[0, 1], [-1, 2]], "row 2 pairs images -1 and 2")):  # fmt: skip
        pd.DataFrame(rows, columns=["i", "j"]).to_csv(broken / "pairs.csv", index=False)
        assert main([*evaluate, "--pairs", str(broken / "pairs.csv"), "--out", str(broken)]) == 2
        assert message in capsys.readouterr().err
    # the own-data pairs, evaluated on the folder in yet another order, score by name
    shuffled = table.sample(frac=1.0, random_state=1)
    pairs = pd.read_csv(own / "pairs.csv").head(4)
    pairs.to_csv(own / "pairs.csv", index=False)
    scored = []
    for order in (table.iloc[::-1], shuffled):
        order.to_csv(folder / "labels.csv", index=False)
        target = tmp_path / f"scored-{len(scored)}"
        args = ["--pairs", str(own / "pairs.csv"), "--data", str(folder), "--out", str(target)]
        assert main([*evaluate, *args]) == 0
        scored.append(pd.read_csv(target / "paired.csv"))
    pd.testing.assert_frame_equal(scored[0], scored[1])
    # mined again over the same folder from images without categorical labels: no
    # matched pairs are made, and the earlier run's are not left beside the new pairs
    assert (own / "matched_pairs.csv").is_file()
    table[["image"]].to_csv(folder / "labels.csv", index=False)
    assert main([*argv, "--threshold-a", "0.97", "--threshold-b", "0.99999", "--no-progress",
                 "--overwrite"]) == 0  # fmt: skip
    assert (own / "pairs.csv").is_file() and not (own / "matched_pairs.csv").exists()
