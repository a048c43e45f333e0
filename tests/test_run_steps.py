"""``interp run`` finishes what it can: an optional step this model or data cannot run is
skipped with a note that says why (and the report and run.json say so), a step asked for
explicitly is refused before any work, and a run stopped part-way continues."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from planted_folder import planted_folder
from tiny_vlms import build_encoder

import analyses.commands.run as pipeline
from analyses import RunConfig, run
from analyses.cli import main
from analyses.files import RUN_MARKER
from interp import ConfigError
from interp.errors import OutputExistsError
from interp.organism.tiny_llava import build_tiny_llava

# Settings small enough for seconds: 16 images, two sites, one selection.
FAST = {
    "n_images": 16,
    "sites": ["vision.0", "lm.1"],
    "selections": ["mean"],
    "conditions": ["baseline"],
    "n_splits": 2,
    "n_boot": 20,
    "progress": False,
}


# The prompt's words and no answer word.
PROMPT_WORDS = "user assistant model : ? . , describe the image what is".split()


@pytest.fixture(scope="module")
def wordless(tmp_path_factory) -> str:
    """A tiny LLaVA whose word-level tokenizer knows the prompt but no answer word."""
    folder = tmp_path_factory.mktemp("wordless")
    return str(build_tiny_llava(folder, words=PROMPT_WORDS, image_size=32, lm_layers=2))


def _record(folder: Path) -> dict:
    return json.loads((folder / "run.json").read_text())


def test_a_model_without_the_answer_words_runs_everything_else(wordless, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", "--model", wordless, "--out", str(out), "--n-images", "16",
                 "--sites", "vision.0", "lm.1", "--selections", "mean", "--conditions",
                 "baseline", "--n-splits", "2", "--n-boot", "20", "--no-progress"])  # fmt: skip
    said = capsys.readouterr()
    assert code == 0, said.err
    assert "answers skipped: no question can be scored" in said.err
    assert "skipped: answers (" in said.out
    for name in ("cache.h5", "probes.csv", "redundancy.csv", "pixel_reconstruction.csv",
                 "layer_attribute_map.html", "report.html", "run.json"):  # fmt: skip
        assert (out / name).is_file(), name
    assert not (out / "answers.csv").exists()
    assert not (out / ".run.partial").exists() and not (out / RUN_MARKER).exists()
    why = _record(out)["skipped"]["answers"]
    assert "no words of this model's tokenizer" in why
    page = (out / "report.html").read_text()
    assert "Steps skipped (and why)" in page and "no words of this model" in page


def test_answers_asked_for_explicitly_are_refused_before_any_work(wordless, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"windows=1 ask for the model's answers.*no question"):
        run(RunConfig(model=wordless, out=str(out), windows=1, **FAST))
    assert not (out / "cache.h5").exists() and not (out / "probes.csv").exists()


def test_own_data_without_questions_or_pixels_skips_both(tiny_dir, tmp_path):
    data = planted_folder(tmp_path / "planted", n=16)
    result = run(RunConfig(model=tiny_dir, data=str(data), out=str(tmp_path / "run"),
                           **{**FAST, "n_images": None}))  # fmt: skip
    assert set(result.skipped) == {"answers", "pixels"}
    assert "no questions" in result.skipped["answers"]
    assert "store_pixels=True" in result.skipped["pixels"]
    assert result.tables.get("answers") is None and result.tables.get("pixels") is None
    assert _record(Path(result.paths["probes"]).parent)["skipped"] == result.skipped


def test_an_encoder_runs_without_answers(tmp_path):
    encoder = build_encoder("clip", tmp_path / "clip")
    result = run(RunConfig(model=encoder, out=str(tmp_path / "run"),
                           **{**FAST, "sites": ["vision.0"], "conditions": None}))  # fmt: skip
    assert "encoder gives no answers" in result.skipped["answers"]
    assert "pixels" not in result.skipped and result.tables.get("pixels") is not None


def test_a_run_stopped_after_its_probe_table_continues(tiny_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    config = RunConfig(model=tiny_dir, out=str(out), **FAST)

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(pipeline, "answers_step", stopped)
        with pytest.raises(KeyboardInterrupt):
            run(config)
    assert (out / "probes.csv").is_file() and not (out / "run.json").exists()
    probed = (out / "probes.csv").stat().st_mtime_ns
    result = run(config)  # the same command continues: no "pass overwrite"
    assert (out / "run.json").is_file() and result.tables.get("answers") is not None
    assert (out / "probes.csv").stat().st_mtime_ns >= probed
    assert not (out / ".run.partial").exists() and not (out / RUN_MARKER).exists()
    # A finished run is not redone, and a stopped run of other settings is not mixed in.
    with pytest.raises(OutputExistsError, match="output already exists"):
        run(config)
    with monkeypatch.context() as patched:
        patched.setattr(pipeline, "answers_step", stopped)
        other = tmp_path / "other"
        with pytest.raises(KeyboardInterrupt):
            run(RunConfig(model=tiny_dir, out=str(other), **FAST))
        with pytest.raises(OutputExistsError, match="output already exists"):
            run(RunConfig(model=tiny_dir, out=str(other), **{**FAST, "seed": 1}))


@pytest.mark.parametrize("family", ["llava_next", "paligemma", "gemma3", "qwen2_vl", "idefics3"])
def test_every_family_runs_to_the_end_without_answer_words(family, tmp_path, monkeypatch):
    """Each family's tiny model, its tokenizer knowing the prompt and no answer word: the
    run skips the answers with the reason and writes everything else."""
    import tiny_vlms

    import interp.organism.tiny_llava as tiny

    with monkeypatch.context() as patched:
        patched.setattr(tiny, "_vocabulary", lambda: PROMPT_WORDS)
        folder = getattr(tiny_vlms, f"build_{family}")(tmp_path / family)
    result = run(RunConfig(model=folder, out=str(tmp_path / "run"),
                           **{**FAST, "sites": None, "conditions": None}))  # fmt: skip
    assert list(result.skipped) == ["answers"], result.skipped
    assert "no words of this model's tokenizer" in result.skipped["answers"]
    for key in ("cache", "probes", "pixels", "redundancy_metrics", "report", "settings"):
        assert result.paths[key].is_file(), key
    assert set(result.table.condition) == {"baseline", "shuffle", "lower_mask"}
