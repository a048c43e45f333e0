"""Sparse autoencoders from a cache: a planted dictionary is recovered, the held-out
metrics equal a numpy recomputation from the saved files and the cache, the files are
SAELens's format both ways, an interrupted training resumes to the same weights, and
``interp sae train`` writes it all."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

import probes.sae_training as training_module
from analyses.cli import main
from caches import CacheReader
from caches.writer import CacheWriter
from interp.layout import TokenLayout
from interp.models.sae import SparseAutoencoder, load_sae
from probes.sae_training import DENSE_SHARE, SaeSpec, SaeTraining, train_saes

SIDE, D_IN, N_FEATURES, K = 4, 16, 32, 3


def _planted_cache(path, n_images: int = 400, seed: int = 0) -> np.ndarray:
    """A cache whose vision.0 tokens are each a positive mix of K of N_FEATURES planted
    unit directions (the ground truth, returned ``(N_FEATURES, D_IN)``)."""
    rng = np.random.default_rng(seed)
    planted = rng.normal(size=(N_FEATURES, D_IN))
    planted /= np.linalg.norm(planted, axis=1, keepdims=True)
    tokens = n_images * SIDE * SIDE
    codes = np.zeros((tokens, N_FEATURES))
    for t in range(tokens):
        codes[t, rng.choice(N_FEATURES, K, replace=False)] = rng.exponential(1.0, K) + 0.5
    acts = (codes @ planted).astype(np.float32).reshape(n_images, SIDE * SIDE, D_IN)
    attrs = {"sites": ["vision.0"], "conditions": ["baseline"], "model": "planted"}
    with CacheWriter(path, {**attrs, "n_images": n_images}) as writer:
        side = 8 * SIDE
        writer.write_static(
            np.zeros((n_images, side, side, 3), np.uint8),
            np.zeros((n_images, side, side), np.int8),
            {"group": np.arange(n_images) % 2},
            {"group": ("a", "b")},
            {"vision.0": TokenLayout.regular(SIDE, SIDE, 8)},
        )
        for start in range(0, n_images, 50):
            batch = torch.from_numpy(acts[start : start + 50])
            writer.write_batch(start, {"baseline": {"vision.0": batch}})
        writer.finalize()
    return planted


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    path = tmp_path_factory.mktemp("planted") / "cache.h5"
    return path, _planted_cache(path)


def _encode(weights: dict[str, np.ndarray], config: dict, x: np.ndarray) -> np.ndarray:
    """SAELens's encoders, written with numpy from the saved files."""
    pre = (x - weights["b_dec"]) @ weights["W_enc"] + weights["b_enc"]  # (tokens, d_sae)
    if config["architecture"] == "standard":
        return np.maximum(pre, 0)
    if config["architecture"] == "jumprelu":
        return pre * (pre > weights["threshold"])
    keep = np.argsort(-pre, axis=1, kind="stable")[:, : config["k"]]
    out = np.zeros_like(pre)
    np.put_along_axis(out, keep, np.maximum(np.take_along_axis(pre, keep, 1), 0), 1)
    return out


def test_a_planted_dictionary_is_recovered(planted, tmp_path) -> None:
    """TopK with k = the planted sparsity finds at least 90% of the planted directions
    (decoder row cosine > 0.9; measured: all 32)."""
    path, directions = planted
    training = SaeTraining(epochs=25, batch_size=256, buffer_tokens=4096, lr=3e-3)
    with CacheReader(path) as reader:
        table = train_saes(
            reader, "vision.0", [SaeSpec("topk", 4, K)], tmp_path, training=training,
            progress=False,
        )  # fmt: skip
    sae = load_sae(tmp_path / "vision.0" / "topk-x4-k3")
    rows = sae.W_dec.detach().numpy()
    rows = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    best = (directions @ rows.T).max(1)
    assert (best > 0.9).mean() >= 0.9, np.sort(best)
    assert table.loc[0, "fvu"] < 0.15 and table.loc[0, "l0"] == pytest.approx(K)


def test_metrics_equal_a_numpy_recomputation_from_the_files(planted, tmp_path) -> None:
    path, _ = planted
    specs = [SaeSpec("topk", 2, 4), SaeSpec("batchtopk", 2, 4), SaeSpec("relu", 2, l1=0.5)]
    training = SaeTraining(epochs=2, batch_size=256, buffer_tokens=2048, held_out=0.2)
    with CacheReader(path) as reader:
        table = train_saes(reader, "vision.0", specs, tmp_path, training=training, progress=False)
    with h5py.File(path) as f:  # the held-out images: the last 20%, read with plain h5py
        x = f["acts/vision.0"][320:].reshape(-1, D_IN).astype(np.float64)
    for spec, row in zip(specs, table.itertuples(), strict=True):
        folder = tmp_path / "vision.0" / spec.name
        config = json.loads((folder / "cfg.json").read_text())
        weights = {
            k: v.astype(np.float64)
            for k, v in load_file(folder / "sae_weights.safetensors").items()
        }
        features = _encode(weights, config, x)
        x_hat = features @ weights["W_dec"] + weights["b_dec"]
        share = (features > 0).mean(0)
        assert row.fvu == pytest.approx(
            ((x_hat - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum(), rel=1e-4
        )
        assert row.l0 == pytest.approx((features > 0).sum(1).mean(), rel=1e-4)
        assert row.dead == pytest.approx((share == 0).mean())
        assert row.dense == pytest.approx((share > DENSE_SHARE).mean())
        assert row.tokens == len(x)
    log = (tmp_path / "vision.0" / "training_log.csv").read_text().splitlines()
    assert log[0].startswith("step,epoch,tokens,sae,loss,fvu,l0") and len(log) > 10


def test_the_files_are_saelens_format_both_ways(tmp_path) -> None:
    sae = SparseAutoencoder(6, 12, "topk", k=2, seed=3)
    sae.save(tmp_path / "ours")
    config = json.loads((tmp_path / "ours" / "cfg.json").read_text())
    weights = load_file(tmp_path / "ours" / "sae_weights.safetensors")
    assert {k: v.shape for k, v in weights.items()} == {
        "W_enc": (6, 12), "b_enc": (12,), "W_dec": (12, 6), "b_dec": (6,),
    }  # fmt: skip
    assert config | {"metadata": None} == {
        "architecture": "topk", "d_in": 6, "d_sae": 12, "dtype": "float32", "device": "cpu",
        "apply_b_dec_to_input": True, "normalize_activations": "none",
        "reshape_activations": "none", "k": 2, "rescale_acts_by_decoder_norm": False,
        "metadata": None,
    }  # fmt: skip
    x = torch.randn(5, 6)
    torch.testing.assert_close(load_sae(tmp_path / "ours")(x), sae(x))
    # One written as SAELens writes a standard SAE without b_dec on the input, and a JumpReLU.
    rng = np.random.default_rng(0)
    theirs = {"W_enc": rng.normal(size=(6, 12)), "b_enc": rng.normal(size=12),
              "W_dec": rng.normal(size=(12, 6)), "b_dec": rng.normal(size=6),
              "threshold": np.abs(rng.normal(size=12))}  # fmt: skip
    for name, apply in (("standard", False), ("jumprelu", True)):
        folder = tmp_path / name
        folder.mkdir()
        kept = {k: v.astype(np.float32) for k, v in theirs.items()}
        if name == "standard":
            kept.pop("threshold")
        save_file(kept, folder / "sae_weights.safetensors")
        cfg = {"architecture": name, "d_in": 6, "d_sae": 12, "apply_b_dec_to_input": apply,
               "normalize_activations": "none", "metadata": {"hook_name": "x"}}  # fmt: skip
        (folder / "cfg.json").write_text(json.dumps(cfg))
        loaded = load_sae(folder)
        xs = rng.normal(size=(4, 6))
        pre = (xs - (theirs["b_dec"] if apply else 0)) @ theirs["W_enc"] + theirs["b_enc"]
        expected = np.maximum(pre, 0) if name == "standard" else pre * (pre > theirs["threshold"])
        got = loaded.encode(torch.from_numpy(xs).float()).detach().numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(Exception, match="holds no SAE"):
        load_sae(tmp_path / "missing")


def test_an_interrupted_training_resumes_to_the_same_weights(
    planted, tmp_path, monkeypatch
) -> None:
    path, _ = planted
    specs = [SaeSpec("topk", 2, 4)]
    training = SaeTraining(epochs=2, batch_size=256, buffer_tokens=2048, checkpoint_every=5)
    with CacheReader(path) as reader:
        train_saes(reader, "vision.0", specs, tmp_path / "whole", training=training, progress=False)
        real = training_module._losses
        calls = []

        def stopped(*args, **kwargs):
            calls.append(1)
            if len(calls) == 13:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        monkeypatch.setattr(training_module, "_losses", stopped)
        with pytest.raises(KeyboardInterrupt):
            train_saes(
                reader, "vision.0", specs, tmp_path / "cut", training=training, progress=False
            )
        assert (tmp_path / "cut" / "vision.0" / "checkpoint.pt").is_file()
        monkeypatch.setattr(training_module, "_losses", real)
        train_saes(reader, "vision.0", specs, tmp_path / "cut", training=training, progress=False)
    whole = load_file(tmp_path / "whole" / "vision.0" / "topk-x2-k4" / "sae_weights.safetensors")
    cut = load_file(tmp_path / "cut" / "vision.0" / "topk-x2-k4" / "sae_weights.safetensors")
    for key in whole:
        np.testing.assert_array_equal(whole[key], cut[key])
    assert not (tmp_path / "cut" / "vision.0" / "checkpoint.pt").exists()


def test_sae_train_from_the_command_line(planted, tmp_path, capsys) -> None:
    path, _ = planted
    out = tmp_path / "saes"
    argv = ["sae", "train", str(path), "--out", str(out), "--no-progress", "--epochs", "1"]
    assert main([*argv, "--architectures", "topk", "relu", "--ks", "2", "4"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("3 SAEs at 1 sites, measured on held-out images:")
    for name in ("topk-x8-k2", "topk-x8-k4", "relu-x8-l1-1"):
        assert (out / "vision.0" / name / "sae_weights.safetensors").is_file(), name
    assert (out / "sae_metrics.csv").read_text().startswith("site,condition,sae,architecture")
    capsys.readouterr()
    assert main([*argv, "--sites", "lm.9", "--overwrite"]) == 2
    assert "sites ['lm.9'] are not in the cache" in capsys.readouterr().err
    assert main([*argv, "--architectures", "gated"]) == 2
    assert "--architectures must be one of topk, batchtopk, relu" in capsys.readouterr().err
    assert main([*argv, "--conditions", "shuffle", "--overwrite"]) == 2
    assert "conditions ['shuffle'] are not in the cache" in capsys.readouterr().err


def test_the_sae_condition_equals_a_plain_hook(tiny_dir, loaded, stimuli, prompt, tmp_path) -> None:
    """sae:lm.2:PATH: every image token of LM layer 2 through the SAE; against a fresh copy
    of the model whose layer-2 output at the image positions goes through the SAE's saved
    weights (numpy) in a plain forward hook; layer 5 sees the same."""
    from references import edited_forward

    from interp import InterventionError
    from interp.experiments.interventions import make_intervention
    from interp.models.tracing import capture_tokens

    adapter = loaded.adapter
    images = stimuli.images[:2]
    width = capture_tokens(loaded, images[:1], ["lm.2"], prompt=prompt).acts["lm.2"].shape[-1]
    sae = SparseAutoencoder(width, 4 * width, "topk", k=8, seed=1)
    with torch.no_grad():
        sae.b_enc.add_(0.1)
    sae.metadata["hook_name"] = "lm.2"
    sae.save(tmp_path / "sae")
    condition = make_intervention(f"sae:lm.2:{tmp_path / 'sae'}")
    condition.check(adapter, [(64, 64)])
    got = capture_tokens(loaded, images, ["lm.2", "lm.5"], prompt=prompt, intervention=condition)
    config = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    weights = {
        k: v.astype(np.float64)
        for k, v in load_file(tmp_path / "sae" / "sae_weights.safetensors").items()
    }
    inputs = adapter.build_inputs(images, prompt)
    where = adapter.image_token_positions(inputs["input_ids"])[0]

    def through_sae(hidden):
        x = hidden[:, where].double().numpy()  # (batch, tokens, d)
        flat = x.reshape(-1, width)
        rebuilt = _encode(weights, config, flat) @ weights["W_dec"] + weights["b_dec"]
        hidden[:, where] = torch.from_numpy(rebuilt.reshape(x.shape)).float()
        return hidden

    lm5 = {"lm.5": adapter.module_path("lm.5")}
    kept = edited_forward(tiny_dir, inputs, adapter.module_path("lm.2"), through_sae, lm5)
    kept["lm.2"] = kept["edited"]
    for site in ("lm.2", "lm.5"):
        torch.testing.assert_close(got.acts[site], kept[site][:, where], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(
        got.acts["lm.5"], capture_tokens(loaded, images, ["lm.5"], prompt=prompt).acts["lm.5"]
    )
    with pytest.raises(InterventionError, match="trained at 'lm.2', not 'lm.3'"):
        make_intervention(f"sae:lm.3:{tmp_path / 'sae'}").check(adapter, [(64, 64)])
    with pytest.raises(InterventionError, match="holds no SAE"):
        make_intervention(f"sae:lm.2:{tmp_path / 'none'}").check(adapter, [(64, 64)])


@pytest.mark.slow  # about 30 s; test_the_sae_condition_equals_a_plain_hook covers the splice
def test_answers_under_the_sae_beside_zero_and_mean_ablation(tmp_path, capsys) -> None:
    """On the organism: an SAE of its projector trained from its cache; interp answers
    runs under sae:projector:PATH like any condition, beside zero:projector and
    mean:projector, and the SAE keeps more of the answers than zeroing the site does
    (measured: baseline 0.60, SAE 0.48, zero 0.36, mean 0.35 of 143 questions)."""
    import pandas as pd

    quiet = ["--no-progress"]
    assert main(["extract", "--out", str(tmp_path / "c"), "--n-images", "48",
                 "--sites", "projector", "--conditions", "baseline", *quiet]) == 0  # fmt: skip
    assert main(["sae", "train", str(tmp_path / "c" / "cache.h5"), "--out", str(tmp_path / "s"),
                 "--expansions", "4", "--ks", "8", "--epochs", "3", *quiet]) == 0  # fmt: skip
    sae = tmp_path / "s" / "projector" / "topk-x4-k8"
    conditions = ["baseline", f"sae:projector:{sae}", "zero:projector", "mean:projector"]
    out = tmp_path / "a"
    argv = ["answers", "--n-images", "24", "--seed", "5", "--n-boot", "20", "--out", str(out)]
    assert main([*argv, "--conditions", *conditions, *quiet]) == 0
    rows = pd.read_csv(out / "answer_rows.csv")
    accuracy = rows.groupby("condition")["correct"].mean()
    assert list(accuracy.index.sort_values()) == sorted(conditions)
    kept = accuracy["baseline"] - accuracy[conditions[1]]
    assert kept < accuracy["baseline"] - accuracy["zero:projector"], accuracy.to_dict()


def test_zero_ablation_zeroes_the_site_and_nothing_before_it(loaded, stimuli, prompt) -> None:
    from interp.experiments.interventions import ZeroAblation, make_intervention
    from interp.models.tracing import capture_tokens

    images = stimuli.images[:2]
    zero = make_intervention("zero:lm.1")
    assert isinstance(zero, ZeroAblation) and zero.condition == "zero:lm.1"
    sites = ["lm.0", "lm.1", "lm.2"]
    got = capture_tokens(loaded, images, sites, prompt=prompt, intervention=zero).acts
    plain = capture_tokens(loaded, images, sites, prompt=prompt).acts
    assert torch.count_nonzero(got["lm.1"]) == 0
    torch.testing.assert_close(got["lm.0"], plain["lm.0"])
    assert not torch.allclose(got["lm.2"], plain["lm.2"])


def test_features_against_attributes_equal_sklearn(tiny_dir, tmp_path) -> None:
    """Each feature's best class per attribute: AUROC as scikit-learn's roc_auc_score
    over the tokens above objects, precision at its top activations by hand; the tokens'
    classes from the layout, checked against the object map at each token's centre."""
    from sklearn.metrics import roc_auc_score

    from probes.sae_features import _token_classes, feature_table, specific_counts

    cache = tmp_path / "c"
    argv = ["extract", "--model", tiny_dir, "--n-images", "24", "--sites", "vision.0"]
    assert main([*argv, "--conditions", "baseline", "--out", str(cache), "--no-progress"]) == 0
    with CacheReader(cache / "cache.h5") as reader:
        train_saes(
            reader, "vision.0", [SaeSpec("topk", 2, 4)], tmp_path / "s", progress=False,
            training=SaeTraining(batch_size=128, buffer_tokens=1024, held_out=0.25),
        )  # fmt: skip
        sae = load_sae(tmp_path / "s" / "vision.0" / "topk-x2-k4")
        table = feature_table(sae, reader, "vision.0", name="topk")
        held = range(18, 24)
        x = torch.from_numpy(np.asarray(reader.acts("vision.0")[18:24]).reshape(-1, sae.d_in))
        with torch.no_grad():
            features = sae.encode(x.float()).numpy()
        layout = reader.layout("vision.0")
        maps = reader.object_map[18:24]
        objects = []  # the object covering most of each token's box, counted by hand
        for picture in maps:
            for y0, x0, y1, x1 in layout.boxes.astype(int):
                found = picture[y0:y1, x0:x1]
                counts = np.bincount(found[found >= 0].ravel(), minlength=1)
                objects.append(int(counts.argmax()) if (found >= 0).any() else -1)
        objects = np.asarray(objects)
        classes = _token_classes(reader, "vision.0", held, ["color"])["color"]
        colours = reader.object_labels("color")[18:24]
        image = np.repeat(np.arange(6), len(layout))
        expected = np.where(objects >= 0, colours[image, np.clip(objects, 0, None)], -1)
        np.testing.assert_array_equal(classes, expected)
        names = reader.label_classes("color")
    assert set(table.attribute) <= {"color", "shape", "size", "cell"} and len(table)
    on = classes >= 0
    rows = table[table.attribute == "color"].set_index("feature")
    for j in range(0, sae.d_sae, 7):
        best = max(roc_auc_score(classes[on] == c, features[on, j]) for c in np.unique(classes[on]))
        assert rows.loc[j, "auroc"] == pytest.approx(best)
        c = names.index(rows.loc[j, "class"])
        n_class = int((classes[on] == c).sum())
        top = np.argsort(-features[on, j], kind="stable")[:n_class]
        assert rows.loc[j, "precision"] == pytest.approx((classes[on][top] == c).mean())
        assert rows.loc[j, "frequency"] == pytest.approx((features[:, j] > 0).mean())
    counts = specific_counts(table, threshold=0.6)
    by_hand = table[(table.frequency > 0) & (table.auroc >= 0.6)].groupby("attribute").size()
    got = counts.set_index("attribute")["specific_features"]
    assert got[got > 0].to_dict() == by_hand.to_dict()


def test_sae_features_from_the_command_line(tiny_dir, tmp_path, capsys) -> None:
    import pandas as pd

    quiet = ["--no-progress"]
    cache = tmp_path / "c"
    assert main(["extract", "--model", tiny_dir, "--n-images", "30", "--sites", "vision.0", "lm.1",
                 "--conditions", "baseline", "shuffle", "--out", str(cache),
                 *quiet]) == 0  # fmt: skip
    assert main(["probe", str(cache / "cache.h5"), "--out", str(cache), "--selections", "token",
                 "--sites", "lm.1", "--conditions", "baseline",
                 "--n-splits", "2", "--n-boot", "10", *quiet]) == 0  # fmt: skip
    assert main(["sae", "train", str(cache / "cache.h5"), "--out", str(tmp_path / "s"),
                 "--expansions", "2", "--ks", "4", "--batch-size", "128", "--conditions",
                 "baseline", "shuffle", *quiet]) == 0  # fmt: skip
    metrics = pd.read_csv(tmp_path / "s" / "sae_metrics.csv")
    assert sorted(zip(metrics.condition, metrics.site, strict=True)) == [
        ("baseline", "lm.1"),
        ("baseline", "vision.0"),
        ("shuffle", "lm.1"),
        ("shuffle", "vision.0"),
    ]
    assert (tmp_path / "s" / "shuffle" / "lm.1" / "topk-x2-k4" / "cfg.json").is_file()
    capsys.readouterr()
    sae = tmp_path / "s" / "vision.0" / "topk-x2-k4"
    lm = tmp_path / "s" / "lm.1" / "topk-x2-k4"
    argv = [
        "sae",
        "features",
        str(sae),
        str(lm),
        "--out",
        str(tmp_path / "f"),
        "--threshold",
        "0.7",
    ]
    argv += ["--model", tiny_dir]
    assert main([*argv, "--probes", str(cache / "probes.csv"), *quiet]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(
        "256 features of 2 SAEs against 4 attributes; specific (AUROC >= 0.7):"
    )
    features = pd.read_csv(tmp_path / "f" / "features.csv")
    counts = pd.read_csv(tmp_path / "f" / "feature_counts.csv")
    assert list(features.columns[:4]) == ["site", "sae", "feature", "frequency"]
    assert set(counts.attribute) == {"color", "shape", "size", "cell"}
    assert set(counts.site) == {"vision.0", "lm.1"}
    words = pd.read_csv(tmp_path / "f" / "feature_words.csv")
    assert set(words.site) == {"lm.1"} and len(words) == 128  # LM sites only: 2 x width 64
    assert (words["words"].str.split().str.len() == 10).all()
    probes = pd.read_csv(cache / "probes.csv").query("selection == 'token'")
    for row in counts.itertuples():  # the probe's score beside each site it probed
        found = probes[(probes.attribute == row.attribute) & (probes.site == row.site)]
        assert (
            row.probe_value == pytest.approx(found["value"].iloc[0])
            if len(found)
            else (row.probe_value != row.probe_value)
        )
    assert main(["sae", "features", str(tmp_path), "--out", str(tmp_path / "g")]) == 2
    assert "holds no SAE" in capsys.readouterr().err
    made = json.loads((tmp_path / "f" / "features.csv.settings.json").read_text())
    words_made = json.loads((tmp_path / "f" / "feature_words.csv.settings.json").read_text())
    assert words_made["origin"] == made["origin"]
    with CacheReader(cache / "cache.h5") as reader:
        assert made["origin"]["n_images"] == reader.n_written == 30
        assert made["origin"]["model"] == reader.attrs["model"]
    other = tmp_path / "other.csv"  # a probe table of another model's cache
    other.write_text((cache / "probes.csv").read_text())
    origin = {**made["origin"], "weights_id": "another"}
    (tmp_path / "other.csv.settings.json").write_text(json.dumps({"origin": origin}))
    argv = ["sae", "features", str(sae), "--probes", str(other), "--out", str(tmp_path / "h")]
    assert main(argv) == 2
    assert "is not a probe table of the SAEs' caches" in capsys.readouterr().err
    assert not (tmp_path / "h" / "features.csv").exists()


def test_feature_words_are_the_logit_lens_of_the_directions(loaded) -> None:
    """The words of a decoder direction: the direction through the LM's final norm and
    unembedding, found here through transformers' own accessors."""
    from interp.experiments.lens import direction_words

    head = loaded.model.get_output_embeddings()
    norm = loaded.model.get_decoder().norm
    directions = torch.randn(3, head.weight.shape[1], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        best = torch.topk(head(norm(directions)), 5, dim=-1).indices
    tokenizer = loaded.processor.tokenizer
    expected = [tokenizer.convert_ids_to_tokens(row.tolist()) for row in best]
    assert direction_words(loaded, directions, top=5) == expected


def test_sae_pages_show_each_features_top_patches(tiny_dir, tmp_path, capsys) -> None:
    """interp sae pages: the grid has a row per feature; each feature's top tokens are its
    largest activations (numpy, from the saved weights), and each crop outlines its token."""
    from PIL import Image

    from analyses.feature_pages import feature_views

    quiet = ["--no-progress"]
    cache = tmp_path / "c"
    assert main(["extract", "--model", tiny_dir, "--n-images", "16", "--sites", "vision.0",
                 "--conditions", "baseline", "--out", str(cache), *quiet]) == 0  # fmt: skip
    assert main(["sae", "train", str(cache / "cache.h5"), "--out", str(tmp_path / "s"),
                 "--expansions", "2", "--ks", "4", "--batch-size", "128", *quiet]) == 0  # fmt: skip
    sae_dir = tmp_path / "s" / "vision.0" / "topk-x2-k4"
    capsys.readouterr()
    argv = ["sae", "pages", str(sae_dir), "--features", "3", "5", "--n-top", "4"]
    assert main([*argv, "--out", str(tmp_path / "p"), *quiet]) == 0
    assert capsys.readouterr().out.startswith("2 features of topk-x2-k4 at vision.0")
    page = (tmp_path / "p" / "feature_pages.html").read_text()
    assert "feature 3" in page and "feature 5" in page and "data:image/png;base64" in page
    grid = Image.open(tmp_path / "p" / "feature_grid.png")
    sae = load_sae(sae_dir)
    with CacheReader(cache / "cache.h5") as reader:
        views = feature_views(sae, reader, "vision.0", [3, 5], n_top=4, context=0, scale=1)
        x = np.asarray(reader.acts("vision.0")[:]).reshape(-1, sae.d_in).astype(np.float64)
        layout = reader.layout("vision.0")
    saved = load_file(sae_dir / "sae_weights.safetensors")
    weights = {k: v.astype(np.float64) for k, v in saved.items()}
    config = json.loads((sae_dir / "cfg.json").read_text())
    features = _encode(weights, config, x)
    for view in views:
        best = np.sort(features[:, view.feature])[::-1][: len(view.top)]
        np.testing.assert_allclose([a for _, _, a in view.top], best, rtol=1e-4)
        for (image, token, activation), crop in zip(view.top, view.crops, strict=True):
            row = image * len(layout) + token  # the token's own activation, by hand
            assert features[row, view.feature] == pytest.approx(activation, rel=1e-4)
            y0, x0, y1, x1 = layout.boxes[token].astype(int)
            assert crop.size == (x1 - x0, y1 - y0)  # context 0: the token's own box
            assert crop.getpixel((0, 0)) == (255, 0, 255)  # outlined
    assert grid.height >= 2 * views[0].crops[0].height
    assert main([*argv[:2], str(tmp_path), "--out", str(tmp_path / "q"), *quiet]) == 2


@pytest.mark.parametrize(
    "family", ["llava_next", "paligemma", "gemma3", "qwen2_vl", "idefics3", "clip"]
)
def test_every_family_trains_reads_and_splices_an_sae(family, tmp_path, capsys) -> None:
    """Each family's tiny model (crops, pooled or merged tokens, ragged layouts, an
    encoder): a cache of its last site, an SAE trained from it, its features against the
    attributes, its feature pages, and the SAE spliced in as a condition of a new
    extraction (the site's tokens then equal the SAE's reconstruction of the baseline's)."""
    import tiny_vlms

    if family == "clip":
        folder = tiny_vlms.build_encoder("clip", tmp_path / family)
    else:
        folder = getattr(tiny_vlms, f"build_{family}")(tmp_path / family)
    quiet = ["--no-progress", "--model", folder]
    cache = tmp_path / "c"
    assert main(["extract", "--out", str(cache), "--n-images", "12", "--conditions", "baseline",
                 *quiet]) == 0  # fmt: skip
    with CacheReader(cache / "cache.h5") as reader:
        site = reader.sites[-1]
    saes = tmp_path / "s"
    assert main(["sae", "train", str(cache / "cache.h5"), "--sites", site, "--out", str(saes),
                 "--expansions", "2", "--ks", "2", "--batch-size", "64", "--held-out", "0.25",
                 "--no-progress"]) == 0  # fmt: skip
    sae_dir = saes / site / "topk-x2-k2"
    assert main(["sae", "features", str(sae_dir), "--out", str(tmp_path / "f"),
                 "--no-progress"]) == 0  # fmt: skip
    assert (tmp_path / "f" / "features.csv").is_file()
    table = str(tmp_path / "f" / "features.csv")
    assert main(["sae", "pages", str(sae_dir), "--table", table, "--n-features", "3",
                 "--out", str(tmp_path / "p"), "--no-progress"]) == 0  # fmt: skip
    assert (tmp_path / "p" / "feature_grid.png").is_file()
    spliced = tmp_path / "x"
    condition = f"sae:{site}:{sae_dir}"
    assert main(["extract", "--out", str(spliced), "--n-images", "12", "--sites", site,
                 "--conditions", "baseline", condition, *quiet]) == 0  # fmt: skip
    sae = load_sae(sae_dir)
    with CacheReader(spliced / "cache.h5") as reader:
        base = torch.from_numpy(reader.site_tokens(site).values)
        through = reader.site_tokens(site, condition).values
    with torch.no_grad():
        expected = sae(base).numpy()
    # The cache stores float16: a token whose k-th and (k+1)-th features nearly tie may
    # keep another feature from the rounded copy; every other token agrees.
    close = np.isclose(through, expected, rtol=1e-2, atol=1e-2).all(1)  # (tokens,)
    assert close.mean() > 0.97, close.mean()


def test_torchrun_ranks_average_their_gradients(planted, tmp_path) -> None:
    """`torchrun --nproc-per-node 2 -m interp sae train`: two gloo ranks, each reading its
    own blocks of images, end with the weights of one process that takes both ranks'
    batches each step and averages their gradients (computed here by hand), bit for bit."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from probes.sae_training import _batches, _input_scale, _losses, _split, rank_blocks

    path, _ = planted
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
               "--master-port", str(29600 + os.getpid() % 1000), "-m", "interp", "sae", "train",
               str(path), "--out", str(tmp_path / "ddp"), "--expansions", "2", "--ks", "4",
               "--batch-size", "256", "--buffer-tokens", "2048", "--no-progress"]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 0 writes the SAEs" in done.stdout and "1 SAEs at 1 sites" in done.stdout
    training = SaeTraining(batch_size=256, buffer_tokens=2048)
    spec = SaeSpec("topk", 2, 4)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with CacheReader(path) as reader:
            train, _ = _split(reader.n_written, training.held_out)
            sae = SparseAutoencoder(D_IN, 2 * D_IN, "topk", 4, seed=training.seed)
            optimiser = torch.optim.Adam(sae.parameters(), lr=training.lr)
            first = np.asarray(reader.acts("vision.0")[: training.block_images], np.float32)
            first = first.reshape(-1, D_IN)
            scale = _input_scale(first)
            with torch.no_grad():
                sae.b_dec.copy_(torch.from_numpy(first.mean(0) * scale))
            streams = []
            for rank in (0, 1):
                blocks = rank_blocks(train, training.block_images, rank, 2)
                tokens = sum(len(b) for b in blocks) * SIDE * SIDE
                streams.append((blocks, tokens // 128))
            steps = min(s for _, s in streams)
            ranks = [
                _batches(reader, "vision.0", "baseline", blocks, 128, training,
                         np.random.default_rng([training.seed, 0, rank]), steps)
                for rank, (blocks, _) in enumerate(streams)
            ]  # fmt: skip
            dead = torch.zeros(sae.d_sae, dtype=torch.bool)
            for batches in zip(*ranks, strict=True):
                optimiser.zero_grad()
                for batch in batches:  # gradients add up over the two ranks' batches
                    _losses(sae, spec, torch.from_numpy(batch * scale), dead)[0].backward()
                for parameter in sae.parameters():
                    parameter.grad /= 2
                optimiser.step()
                sae.normalize_decoder()
    finally:
        torch.set_num_threads(threads)
    sae.fold_scale(scale)
    ddp = load_sae(tmp_path / "ddp" / "vision.0" / "topk-x2-k4")
    for key in ("W_enc", "b_enc", "W_dec", "b_dec"):
        torch.testing.assert_close(getattr(ddp, key), getattr(sae, key), rtol=0, atol=0)
