"""``interp run`` end to end on the tiny model, and its one-line errors."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
from PIL import Image

from analyses import OUTPUT_FILES, RunConfig
from analyses.cli import main
from analyses.files import RUN_MARKER
from caches import CacheReader
from interp import ConfigError, UnsupportedModelError, adapter_for, load_model
from probes import TABLE_COLUMNS

FAST = ["--n-images", "40", "--no-progress", "--n-splits", "2", "--n-boot", "50"]


@pytest.mark.parametrize("command", [["run"], ["organism", "eval"], []])
def test_help_lists_every_option(command, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    if command == ["run"]:
        for field in dataclasses.fields(RunConfig):
            assert "--" + field.name.replace("_", "-") in printed, field.name
        assert "95% intervals" in printed
        assert "--label-columns" in printed


def test_label_columns_is_the_attributes_option() -> None:
    from analyses.cli import build_parser

    parsed = build_parser().parse_args(["run", "--data", "d", "--label-columns", "a", "b"])
    assert parsed.attributes == ["a", "b"]
    assert build_parser().parse_args(["run", "--attributes", "c"]).attributes == ["c"]


def test_run_writes_every_output(tiny_dir, tmp_path, capsys) -> None:
    out = tmp_path / "results"
    code = main(
        [
            "run",
            "--out",
            str(out),
            "--model",
            tiny_dir,
            *FAST,
            "--sites",
            "vision.0",
            "lm.5",
            "projector",
            "--selections",
            "mean",
            "token",
            "random_1",
            "random_64",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    for key, name in OUTPUT_FILES.items():
        if key in ("window_figure", "drop_figure"):  # only with --windows / --drop-ks
            assert not (out / name).exists()
            continue
        assert (out / name).is_file() and str(out / name) in printed
    answers = pd.read_csv(out / "answers.csv")
    assert set(answers.condition) == {"baseline", "shuffle", "lower_mask"}
    assert set(answers.question_type) == {
        "color",
        "shape",
        "size",
        "count",
        "left_right",
        "top_bottom",
    }
    table = pd.read_csv(out / "probes.csv")
    assert list(table.columns) == TABLE_COLUMNS
    assert set(table.condition) == {"baseline", "shuffle", "lower_mask"}
    assert list(dict.fromkeys(table.site)) == ["vision.0", "projector", "lm.5"]
    assert set(table.attribute) == {"color", "shape", "size", "cell", "count", "x", "y"}
    assert set(table[table.attribute.isin(["x", "y"])].metric) == {"r2"}
    assert set(table.selection) == {"mean", "token", "random_1", "random_64"}
    # the ablations are probed with mean and token only, unless asked otherwise
    assert set(table[table.condition == "shuffle"].selection) == {"mean", "token"}
    pixels = pd.read_csv(out / "pixel_reconstruction.csv")
    assert set(pixels.metric) == {"mae", "psnr"} and set(pixels.condition) == {"baseline"}
    assert list(dict.fromkeys(pixels.site)) == ["vision.0", "projector", "lm.5"]
    html = (out / "layer_attribute_map.html").read_text()
    assert "plotly" in html.lower() and "lower_mask" in html and len(html) > 1_000_000
    assert "random tokens pooled" in (out / "redundancy_curves.html").read_text()
    with Image.open(out / "pixel_reconstructions.png") as picture:
        assert picture.size[0] == 4 * (64 * 3 + 2)  # original + three sites
    assert not list(out.glob("*.partial"))


def test_existing_outputs_are_refused_without_overwrite(tiny_dir, tmp_path, capsys) -> None:
    out = tmp_path / "r"
    out.mkdir()
    (out / "probes.csv").write_text("precious")
    code = main(["run", "--out", str(out), "--model", tiny_dir, *FAST])
    assert code == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err
    assert (out / "probes.csv").read_text() == "precious"
    assert not (out / "cache.h5").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "/no/such/folder"], "model path '/no/such/folder' does not exist"),
        (["--sites", "lm.99"], "unknown site 'lm.99'"),
        (["--image-size", "60"], "does not tile"),
        (["--conditions", "dropout"], "unknown condition 'dropout'; conditions are written"),
        (["--n-images", "3"], "too few"),
        (["--selections", "corners"], "unknown token selection 'corners'"),
        (["--ablation-selections", "random_x"], "unknown token selection 'random_x'"),
        (["--dtype", "float8"], "unknown dtype"),
        (["--seed", "-1"], "seed must be >= 0"),
        (["--image-size", "0"], "--image-size must be >= 1, got 0"),
        (["--out", ""], "out must name an output folder"),
        (["--n-images", "12", "--n-splits", "5"], "use at least 15 images"),
        (["--selections", "random_0"], "random_<k> needs k >= 1"),
        (["--selections", "random_65"], "needs 1 <= k <= 64, the fewest tokens of an image at"),
        (["--question", "<image> what color?"], "question must not hold the image token"),
        (["--store-dtype", "float64"], "--store-dtype must be one of float16, bfloat16, float32"),
        (["--model", "no-org/no-model"], "not in the local Hugging Face cache"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(args, message, tiny_dir, tmp_path, capsys) -> None:
    argv = ["run", "--out", str(tmp_path / "o"), "--model", tiny_dir, *FAST, *args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("interp: error:") and message in err and "\n" not in err
    assert not (tmp_path / "o").exists(), "refused before anything was written"


def test_output_that_is_a_file_or_under_one(tiny_dir, tmp_path, capsys) -> None:
    (tmp_path / "f").write_text("keep")
    for out, message in [("f", "is an existing file"), ("f/sub", "which is a file")]:
        assert main(["run", "--out", str(tmp_path / out), "--model", tiny_dir, *FAST]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "choose another --out" in err and "\n" not in err
    assert (tmp_path / "f").read_text() == "keep"


def test_an_interrupted_run_never_mixes_outputs_and_resumes(
    tiny_dir, tmp_path, monkeypatch, capsys
) -> None:
    import analyses.commands.probe as steps
    import caches.extraction as extraction

    out = tmp_path / "r"
    argv = ["run", "--out", str(out), "--model", tiny_dir, *FAST, "--n-images", "12"]
    argv += ["--sites", "vision.0", "lm.3", "--selections", "mean"]
    assert main(argv) == 0
    first = (out / "probes.csv").read_bytes()
    real_sweep = steps.sweep

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(steps, "sweep", interrupted)  # Ctrl-C while probing
    assert main([*argv, "--overwrite", "--seed", "1"]) == 130
    err = capsys.readouterr().err
    assert "removed the outputs of an earlier run" in err and "probes.csv" in err
    assert "rerun the same command to continue" in err and "finished one is reused" in err
    # nothing of the first run is left beside the second's cache (and its run's marker)
    assert sorted(p.name for p in out.iterdir()) == [RUN_MARKER, "cache.h5"]
    with CacheReader(out / "cache.h5") as reader:
        assert reader.attrs["stimuli"]["seed"] == 1
    monkeypatch.setattr(steps, "sweep", real_sweep)

    def no_capture(*args, **kwargs):
        raise AssertionError("the finished cache is reused, not extracted again")

    monkeypatch.setattr(extraction, "capture_tokens", no_capture)
    assert main([*argv, "--seed", "1"]) == 0  # the same command, without --overwrite
    assert "reusing the finished cache" in capsys.readouterr().err
    assert {p.name for p in out.iterdir()} >= set(OUTPUT_FILES.values()) - {
        "redundancy_curves.html",
        "layer_window_sweep.html",
        "token_dropping.html",
    }
    assert (out / "probes.csv").read_bytes() != first
    # a cache of other settings is named as such, not silently reused
    for name in OUTPUT_FILES.values():
        if name != "cache.h5":
            (out / name).unlink(missing_ok=True)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "different 'stimuli'" in err and "--overwrite" in err


def test_builtin_random_model_loads_through_from_pretrained(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("VLM_INTERP_HOME", str(tmp_path / "home"))
    model = load_model("tiny-llava")
    assert model.source == str(tmp_path / "home" / "tiny-llava-seed0")
    assert (tmp_path / "home" / "tiny-llava-seed0" / "model.safetensors").is_file()
    assert model.adapter.family == "LLaVA-1.5" and model.adapter.n_lm_layers == 8
    assert RunConfig().model == "organism"  # the trained default


def test_unknown_hub_id_offline_and_folder_without_config(tmp_path) -> None:
    from interp import ModelLoadError

    with pytest.raises(ModelLoadError, match="local save_pretrained folder"):
        load_model("no-such-org/no-such-model", local_files_only=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(str(tmp_path / "empty"))


def test_a_processor_missing_a_package_says_what_to_install(tiny_dir, monkeypatch) -> None:
    import transformers

    from interp import ModelLoadError

    def needs_torchvision(*args, **kwargs):
        raise ImportError("Qwen2VLVideoProcessor requires the Torchvision library.")

    monkeypatch.setattr(transformers.AutoProcessor, "from_pretrained", needs_torchvision)
    with pytest.raises(ModelLoadError, match=r"needs a package.*Torchvision.*vlm-interp\[qwen\]"):
        load_model(tiny_dir)


def test_unsupported_family_names_the_supported_ones() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=10))
    with pytest.raises(
        UnsupportedModelError, match=r"'gpt2'.*llava \(LLaVA-1.5\).*register_adapter"
    ):
        adapter_for(model, processor=None)


def test_config_dataclass_validates() -> None:
    with pytest.raises(ConfigError, match="n_splits"):
        RunConfig(n_splits=1)
    with pytest.raises(ConfigError, match="batch_size"):
        RunConfig(batch_size=0)
