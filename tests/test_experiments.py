"""interp experiment complexity / encoder, end to end at toy size."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from analyses.cli import main
from analyses.experiments import (
    ComplexityExperimentConfig,
    EncoderExperimentConfig,
    _tuned,
    complexity_experiment,
)
from interp import ConfigError

TOY = {"steps": 2, "batch_size": 4, "n_images": 50, "progress": False}


def test_complexity_experiment_tables_figures_and_reuse(tmp_path) -> None:
    config = ComplexityExperimentConfig(
        out=str(tmp_path / "c"), levels=[1, 4], sites=["vision.3"],
        attributes=["color"], selections=["mean", "random_4"], **TOY,
    )  # fmt: skip
    paths = complexity_experiment(config)
    assert all(path.is_file() for path in paths.values())
    spectra = pd.read_csv(paths["redundancy"])
    rank = spectra[spectra["metric"] == "effective_rank"].set_index(["model", "level", "site"])
    assert set(rank.index.get_level_values("model")) == {"start", "tuned at 1", "tuned at 5"}
    for model in ("tuned at 1", "tuned at 5"):  # the encoder was frozen: its tokens are the start's
        for level in (1, 4):
            assert (
                rank.loc[(model, level, "vision.3"), "value"]
                == (rank.loc[("start", level, "vision.3"), "value"])
            )
    assert rank.loc[("start", 4, "vision.3"), "value"] > rank.loc[("start", 1, "vision.3"), "value"]
    answers = pd.read_csv(paths["answers"])
    assert set(answers["level"]) == {1, 4} and set(answers["question"]) >= {"shape", "count"}
    probes = pd.read_csv(paths["probes"])
    assert set(probes["selection"]) == {"mean", "random_4"} and set(probes["attribute"]) == {
        "color"
    }
    assert not (tmp_path / "c" / "caches").exists(), "caches are removed"
    weights = tmp_path / "c" / "models" / "level5" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    # the same recipe: the fine-tuned model is reused; another recipe trains anew
    assert _tuned(config, "level5", complexity=5, train_encoder=False) == str(weights.parent)
    assert weights.stat().st_mtime_ns == stamp
    _tuned(dataclasses.replace(config, steps=1), "level5", complexity=5, train_encoder=False)
    assert weights.stat().st_mtime_ns != stamp


def test_encoder_experiment_writes_pixel_errors_and_pictures(tmp_path, capsys) -> None:
    out = tmp_path / "e"
    argv = ["experiment", "encoder", "--out", str(out), "--sites", "vision.3"]
    assert (
        main([*argv, "--steps", "2", "--batch-size", "4", "--n-images", "50", "--no-progress"]) == 0
    )
    pixels = pd.read_csv(out / "pixels.csv")
    mae = pixels[pixels["metric"] == "mae"].set_index(["model", "site"])["value"]
    assert set(mae.index.get_level_values("model")) == {
        "start",
        "encoder frozen",
        "encoder adapted",
    }
    assert mae[("encoder frozen", "vision.3")] == mae[("start", "vision.3")]
    assert mae[("encoder adapted", "vision.3")] != mae[("start", "vision.3")]
    answers = pd.read_csv(out / "answers.csv")
    pixel = answers[answers["question"] == "pixel"]
    assert set(pixel["model"]) == {"encoder frozen", "encoder adapted"}
    for name in ("start", "encoder_frozen", "encoder_adapted"):
        assert (out / f"reconstructions_{name}.png").is_file()
    assert "pixel_error:" in capsys.readouterr().out
    # the same command again is refused (its tables stay), the other experiment's too
    assert main([*argv, "--steps", "2", "--batch-size", "4", "--n-images", "50"]) == 2
    assert "holds an earlier run of the encoder experiment" in capsys.readouterr().err
    other = ["experiment", "complexity", "--out", str(out), "--steps", "2", "--n-images", "50"]
    assert main([*other, "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "holds the encoder experiment's outputs; give the complexity experiment its own" in err


def test_experiments_refuse_before_fine_tuning(tmp_path, monkeypatch, capsys) -> None:
    import analyses.experiments as experiments

    def no_tuning(*args, **kwargs):
        raise AssertionError("refused before any fine-tuning")

    monkeypatch.setattr(experiments, "_tuned", no_tuning)
    argv = ["experiment", "complexity", "--out", str(tmp_path / "c"), "--no-progress"]
    assert main([*argv, "--sites", "foo"]) == 2
    assert "foo" in capsys.readouterr().err
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    argv = ["experiment", "encoder", "--out", str(tmp_path / "e")]
    assert main([*argv, "--device-map", "cuda"]) == 2
    assert "--device-map cuda needs a CUDA GPU, but torch sees none" in capsys.readouterr().err
    assert main([*argv, "--device", "cuda"]) == 2  # the old spelling, for one release
    err = capsys.readouterr().err
    assert "--device is renamed --device-map" in err and "--device-map cuda needs a CUDA" in err


def test_renamed_settings_still_work_for_one_release() -> None:
    """``batch`` and ``device`` are ``batch_size`` and ``device_map`` now; the old keywords
    still set them, with a FutureWarning that names the new one."""
    with pytest.warns(FutureWarning, match="batch is renamed batch_size"):
        config = EncoderExperimentConfig(
            batch=4, **{k: v for k, v in TOY.items() if k != "batch_size"}
        )
    assert config.batch_size == 4
    with pytest.warns(FutureWarning, match="device is renamed device_map"):
        assert ComplexityExperimentConfig(device="cpu").device_map == "cpu"
    with pytest.raises(ConfigError, match="give batch_size once"):
        EncoderExperimentConfig(batch=4, batch_size=8)


@pytest.mark.parametrize(
    ("cls", "kwargs", "message"),
    [
        (ComplexityExperimentConfig, {"low": 5, "high": 2}, "low < high"),
        (
            ComplexityExperimentConfig,
            {"levels": [0]},
            "levels must be one of 1, 2, 3, 4, 5, got \\[0\\]",
        ),
        (ComplexityExperimentConfig, {"n_images": 10}, "n_images must be >= 50"),
        (ComplexityExperimentConfig, {"selections": ["most"]}, "selection"),
        (EncoderExperimentConfig, {"complexity": 9}, "complexity must be one of"),
    ],
)
def test_bad_experiment_settings_are_refused(cls, kwargs, message) -> None:
    with pytest.raises(ConfigError, match=message):
        cls(**kwargs)
