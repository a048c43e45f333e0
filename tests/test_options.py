"""Options declared once: the rule each option follows is checked for every settings
class; renamed options and the old file-style ``--out`` still work for one release, with a
warning that names the new spelling."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from analyses.cli import main
from analyses.commands import ExtractConfig, ProbeConfig, ReportConfig
from analyses.commands.options import output_file
from interp import ConfigError
from interp.options import Settings, option, renamed_options


@renamed_options(size="width")
@dataclass
class _Toy(Settings):
    width: int = option("a width", default=4, minimum=1)
    share: float = option("a share", default=0.5, minimum=0, maximum=1)
    kind: str = option("a kind", default="a", choices=("a", "b"))
    names: list[str] | None = option("names", default=None)
    sides: list[int] | None = option("sides", default=None, minimum=1)
    checked: list[str] | None = None

    def check(self) -> None:
        self.checked = list(self.names or ())  # runs after the declared rules


def test_declared_rules_are_checked_for_every_value() -> None:
    assert _Toy().width == 4
    with pytest.raises(ConfigError, match=r"^width must be >= 1, got 0$"):
        _Toy(width=0)
    with pytest.raises(ConfigError, match=r"^share must lie in \[0, 1\], got 1.5$"):
        _Toy(share=1.5)
    with pytest.raises(ConfigError, match=r"^kind must be one of a, b, got 'c'$"):
        _Toy(kind="c")
    with pytest.raises(ConfigError, match=r"^sides must be >= 1, got \[2, 0\]$"):
        _Toy(sides=[2, 0])
    toy = _Toy(names="one", sides=3)  # one value for a list option is a list of one
    assert toy.names == ["one"] and toy.sides == [3] and toy.checked == ["one"]
    assert _Toy(names=["b", "a", "b"]).names == ["b", "a"]  # distinct, in their order
    with pytest.raises(ConfigError, match="names must be a name or a list of names"):
        _Toy(names=[1, 2])


def test_a_renamed_option_still_works_with_a_warning() -> None:
    with pytest.warns(FutureWarning, match="size is renamed width"):
        assert _Toy(size=3).width == 3
    with pytest.warns(FutureWarning), pytest.raises(ConfigError, match="width must be >= 1"):
        _Toy(size=0)  # the new name's rule applies
    with pytest.raises(ConfigError, match="give width once: size is its old name"):
        _Toy(size=3, width=4)


def test_out_is_a_folder_and_a_file_path_still_works_for_one_release(tmp_path) -> None:
    assert output_file(tmp_path, "cache.h5") == tmp_path / "cache.h5"
    assert ExtractConfig(out=str(tmp_path)).cache_path() == tmp_path / "cache.h5"
    assert ProbeConfig(cache="c.h5", out=str(tmp_path)).table_path() == tmp_path / "probes.csv"
    assert ReportConfig(run=str(tmp_path)).page_path() == tmp_path / "report.html"
    with pytest.warns(FutureWarning, match=r"out is now a folder on every command"):
        assert ExtractConfig(out=str(tmp_path / "mine.h5")).cache_path() == tmp_path / "mine.h5"
    with pytest.warns(FutureWarning, match=r"this one writes OUT/probes.csv"):
        ProbeConfig(cache="c.h5", out=str(tmp_path / "t.csv"))
    folder = tmp_path / "named.h5"  # a folder whose name ends like the file is a folder
    folder.mkdir()
    assert output_file(folder, "cache.h5") == folder / "cache.h5"


def test_extract_and_probe_write_into_the_folder_out(tiny_dir, tmp_path, capsys) -> None:
    study = tmp_path / "study"
    common = ["--no-progress", "--sites", "vision.0"]
    argv = ["extract", "--model", tiny_dir, "--n-images", "20", "--out", str(study)]
    assert main([*argv, *common, "--conditions", "baseline"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == ["cache of 20 images: cache.h5", f"cache: {(study / 'cache.h5').resolve()}"]
    argv = ["probe", str(study / "cache.h5"), "--out", str(study), "--selections", "mean"]
    assert main([*argv, *common, "--n-splits", "2", "--n-boot", "10"]) == 0
    assert (study / "probes.csv").is_file() and (study / "probes.csv.settings.json").is_file()
    assert capsys.readouterr().out.splitlines()[-1] == f"probes: {(study / 'probes.csv').resolve()}"
