"""The newer commands fail as clearly as the old ones: every user error is one line that
says what was expected, what was found and the fix, in command-line terms, before any
work; never a traceback, never a silent wrong result."""

from __future__ import annotations

import re

import pytest
from PIL import Image

from interp.cli import main


def _error(capsys, argv: list[str]) -> str:
    """The one-line error of a command that must fail with exit code 2."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("interp: error: ") and "\n" not in err, err
    assert "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def cache(tiny_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("messages") / "cache.h5"
    argv = ["extract", "--model", tiny_dir, "--out", str(path), "--n-images", "8"]
    assert main([*argv, "--sites", "vision.0", "lm.1", "--no-progress"]) == 0
    return path


def test_info_says_what_it_found(tmp_path, capsys) -> None:
    err = _error(capsys, ["info", str(tmp_path / "nothing.h5")])
    assert f"no cache at {tmp_path / 'nothing.h5'};" in err and ".partial" not in err
    err = _error(capsys, ["info", str(tmp_path)])
    assert "is a folder, not a cache file; pass the cache file itself" in err
    picture = tmp_path / "picture.png"
    Image.new("RGB", (4, 4)).save(picture)
    err = _error(capsys, ["info", str(picture)])
    assert "is not an HDF5 file, so not an activation cache" in err
    assert "overwrite" not in err


def test_info_on_an_unpublished_parallel_extraction(cache, tmp_path, capsys) -> None:
    (tmp_path / "cache.rank0.h5").write_bytes(cache.read_bytes())
    (tmp_path / "cache.rank1.h5.partial").write_bytes(b"")
    capsys.readouterr()
    assert main(["info", str(tmp_path / "cache.h5")]) == 0
    printed = capsys.readouterr().out
    assert "unfinished data-parallel extraction: not published yet" in printed
    assert re.search(r"rank file cache.rank0.h5:\s+complete", printed)
    assert re.search(r"rank file cache.rank1.h5.partial:\s+unreadable", printed)


def test_conditions_are_checked_against_the_model_before_any_work(tiny_dir, tmp_path, capsys):
    out = tmp_path / "answers"
    argv = ["answers", "--model", tiny_dir, "--n-images", "4", "--out", str(out), "--no-progress"]
    err = _error(capsys, [*argv, "--conditions", "mask:9-12"])
    assert "mask:9-12 reaches LM layer 12" in err and "layers 0 to 7" in err
    err = _error(capsys, [*argv, "--conditions", "drop:random:1000"])
    assert "drop:random:1000 keeps 1000 image tokens" in err and "choose K below 64" in err
    err = _error(capsys, [*argv, "--conditions", "mean:lm.99"])
    assert "lm.99" in err
    assert not out.exists() or not any(out.iterdir())


def test_lens_and_attention_refuse_what_they_would_ignore(tmp_path, capsys) -> None:
    lens = ["lens", "--out", str(tmp_path / "lens"), "--n-images", "4", "--no-progress"]
    err = _error(capsys, [*lens, "--conditions", "shuffle", "mean:lm.2"])
    assert "the logit lens reads the model as it is" in err and "out --conditions" in err
    err = _error(capsys, [*lens, "--windows", "2", "--drop-ks", "4"])
    assert "would change nothing: leave out --windows --drop-ks" in err
    attention = ["attention", "--out", str(tmp_path / "a"), "--n-images", "2", "--no-progress"]
    err = _error(capsys, [*attention, "--sites", "lm.2"])
    assert "not per site: leave sites out and pass --layers 2" in err
    for query in ("999", "-999"):
        err = _error(capsys, [*attention, "--query", query])
        assert f"--query {query} is no position of the prompt" in err
    assert not (tmp_path / "a" / "attention.csv").exists()
