"""The newer commands fail as clearly as the old ones: every user error is one line that
says what was expected, what was found and the fix, in command-line terms, before any
work; never a traceback, never a silent wrong result."""

from __future__ import annotations

import json
import os
import re

import pytest
from PIL import Image

from analyses.cli import main


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


def test_commands_do_not_offer_what_they_would_ignore(tmp_path, capsys) -> None:
    """The logit lens reads the model as it is (no conditions), attention is read per LM
    layer (no sites), patching draws no layer map (no score), answers, lens and attention
    store no cache (no storage options): those flags are not offered."""
    lens = ["lens", "--out", str(tmp_path / "lens"), "--n-images", "4", "--no-progress"]
    attention = ["attention", "--out", str(tmp_path / "a"), "--n-images", "2", "--no-progress"]
    for argv in (
        [*lens, "--conditions", "shuffle"],
        [*lens, "--windows", "2"],
        [*attention, "--sites", "lm.2"],
        ["patch", "--score", "accuracy"],
        ["answers", "--store-dtype", "float32"],
        ["lens", "--compression", "gzip"],
        ["attention", "--workers", "2"],
    ):
        capsys.readouterr()
        with pytest.raises(SystemExit) as stopped:
            main(argv)
        assert stopped.value.code == 2
        assert f"unrecognized arguments: {argv[-2]}" in capsys.readouterr().err
    for query in ("999", "-999"):
        err = _error(capsys, [*attention, "--query", query])
        assert f"--query {query} is no position of the prompt" in err
    assert not (tmp_path / "a" / "attention.csv").exists()


def test_plot_says_which_tables_it_draws(cache, tmp_path, capsys) -> None:
    plot = ["plot", "--out", str(tmp_path / "figures")]
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert "is empty" in _error(capsys, [*plot, str(empty)])
    header = tmp_path / "header.csv"
    header.write_text("site,depth,condition\n")
    assert "has a header but no rows" in _error(capsys, [*plot, str(header)])
    for name, columns, command in (
        ("redundancy.csv", "site,condition,attribute,metric,value", "interp redundancy"),
        ("paired.csv", "condition,pattern,n_pairs,pair_accuracy", "interp pairs-eval"),
        ("pairs.csv", "i,j,image_i,image_j,cos_a,cos_b", "interp mine"),
        ("mof.csv", "selection,mode,alpha,attribute,value", "interp mof"),
    ):
        table = tmp_path / name
        table.write_text(columns + "\n" + ",".join("1" for _ in columns.split(",")) + "\n")
        err = _error(capsys, [*plot, str(table)])
        assert f"({name}) table; {command} draws its figure" in err
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    assert "is no table interp plot draws (its columns: a, b)" in _error(
        capsys, [*plot, str(other)]
    )
    assert not (tmp_path / "figures").exists()


@pytest.fixture(scope="module")
def two_runs(cache, tiny_dir, tmp_path_factory):
    """Probe tables and answers of the cache's run, and answers of other images."""
    folder = tmp_path_factory.mktemp("two-runs")
    assert main(["probe", str(cache), "--out", str(folder / "probes.csv"), "--n-splits", "2",
                 "--n-boot", "10", "--selections", "mean", "--no-progress"]) == 0  # fmt: skip
    argv = ["answers", "--n-boot", "10", "--conditions", "baseline", "--no-progress"]
    assert main([*argv, str(cache), "--out", str(folder / "same")]) == 0
    other = ["--model", tiny_dir, "--n-images", "8", "--seed", "3"]
    assert main([*argv, *other, "--out", str(folder / "other")]) == 0
    return folder


def test_tables_of_different_runs_are_not_combined(cache, two_runs, tmp_path, capsys) -> None:
    probes, same, other = (two_runs / "probes.csv", two_runs / "same" / "answers.csv",
                           two_runs / "other" / "answers.csv")  # fmt: skip
    plot = ["plot", "--out", str(tmp_path / "figures")]
    err = _error(capsys, [*plot, str(probes), str(other)])
    assert "come from different runs: their data differs" in err
    assert main([*plot, str(probes), str(same)]) == 0
    assert (tmp_path / "figures" / "decodable_vs_used.html").is_file()
    copy = tmp_path / "copy.csv"
    copy.write_bytes(probes.read_bytes())
    err = _error(capsys, [*plot, "--overwrite", str(probes), str(copy)])
    assert "are both probe tables" in err
    redundancy = ["redundancy", str(cache), "--n-boot", "10", "--out", str(tmp_path / "r")]
    err = _error(capsys, [*redundancy, "--answers", str(other)])
    assert "and the cache come from different runs: their data differs" in err
    assert main([*redundancy, "--answers", str(same), "--probes", str(probes)]) == 0


def test_answers_from_a_cache_refuse_settings_that_contradict_it(cache, tmp_path, capsys):
    argv = ["answers", str(cache), "--out", str(tmp_path / "a"), "--no-progress"]
    err = _error(capsys, [*argv, "--n-images", "4"])
    assert "--n-images 4 contradicts the cache" in err and "holds 8 images" in err
    err = _error(capsys, [*argv, "--seed", "5"])
    assert "--seed 5 contradicts the cache" in err and "made with seed 0" in err
    err = _error(capsys, [*argv, "--model", "organism"])
    assert "is not the model the cache was made with" in err
    err = _error(capsys, ["answers", "--n-images", "1", "--out", str(tmp_path / "b")])
    assert "--n-images must be >= 2" in err
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())


def test_redundancy_labels_a_cache_in_the_current_folder(cache, tmp_path, monkeypatch) -> None:
    from analyses.commands import RedundancyConfig, redundancy_step

    monkeypatch.chdir(cache.parent)
    config = RedundancyConfig(caches=["cache.h5"], n_boot=5, out=str(tmp_path / "r"))
    table = redundancy_step(config).table
    assert set(table.label) == {f"{cache.parent.name}/cache.h5"}


def test_messages_name_flags_but_not_quoted_settings() -> None:
    from analyses.cli import as_flags

    assert as_flags("pixel_questions must be >= 1") == "--pixel-questions must be >= 1"
    assert as_flags("pass batch_size=4") == "pass --batch-size 4"
    said = "made with other settings: its 'n_images' differs (found 8, now 16)"
    assert as_flags(said) == said


def test_train_ssl_refuses_a_batch_without_negatives(tmp_path, capsys) -> None:
    argv = ["organism", "train-ssl", "--out", str(tmp_path / "s")]
    err = _error(capsys, [*argv, "--batch-size", "1"])
    assert err == "interp: error: --batch-size must be >= 2, got 1"
    capsys.readouterr()
    assert main([*argv, "--batch", "1"]) == 2  # the old spelling, for one release
    said = capsys.readouterr().err.strip().splitlines()
    assert said == [
        "interp: warning: --batch is renamed --batch-size; --batch will be removed in the next "
        "release",
        "interp: error: --batch-size must be >= 2, got 1",
    ]


def test_missing_inputs_are_named_in_command_line_terms(cache, tmp_path, capsys) -> None:
    missing = str(tmp_path / "missing.h5")
    for argv in (
        ["mof", missing, str(cache), "--out", str(tmp_path / "m")],
        ["redundancy", missing, "--out", str(tmp_path / "r")],
    ):
        err = _error(capsys, argv)
        assert f"no cache at {missing}; pass the file an extraction wrote" in err
        assert "caches.extract" not in err and "DIR/cache.h5" not in err
    err = _error(capsys, ["report", str(tmp_path)])
    assert "holds no probes.csv" in err and "--run" not in err


def test_file_system_errors_name_the_fix(tmp_path, monkeypatch, capsys) -> None:
    import errno

    import analyses.commands.plot as steps

    fixes = {
        errno.ENOSPC: "the disk is full: free space there or choose another --out",
        errno.EROFS: "that place cannot be written: choose another --out",
    }
    for code, fix in fixes.items():

        def failing(*args, code=code, **kwargs):
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr(steps, "read_table", failing)
        table = tmp_path / "t.csv"
        table.write_text("a\n1\n")
        err = _error(capsys, ["plot", str(table), "--out", str(tmp_path / "f")])
        assert os.strerror(code) in err and fix in err


def test_report_refuses_tables_of_different_runs(two_runs, tmp_path, capsys) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    for name in ("probes.csv", "probes.csv.settings.json"):
        (folder / name).write_bytes((two_runs / name).read_bytes())
    for name in ("answers.csv", "answers.csv.settings.json"):
        (folder / name).write_bytes((two_runs / "other" / name).read_bytes())
    err = _error(capsys, ["report", str(folder)])
    assert "come from different runs: their data differs" in err
    for name in ("answers.csv", "answers.csv.settings.json"):
        (folder / name).write_bytes((two_runs / "same" / name).read_bytes())
    assert main(["report", str(folder)]) == 0
    made = json.loads((two_runs / "other" / "answers.csv.settings.json").read_text())
    assert made["seed"] == 3 and made["origin"]["n_images"] == 8
    assert made["origin"]["data"]["spec"]["seed"] == 3 and made["conditions"] == ["baseline"]


def test_attention_help_says_its_own_default_condition(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["attention", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "(default: baseline)" in shown and "baseline shuffle lower_mask" not in shown


def test_an_unknown_command_is_refused_not_run_as_another(capsys) -> None:
    import argparse

    from analyses.cli import _dispatch

    assert _dispatch(argparse.Namespace(command="organism", step="evaluate"), {}) == 2
    assert "unknown command 'organism evaluate'" in capsys.readouterr().err
    assert _dispatch(argparse.Namespace(command="nope"), {}) == 2
    assert "unknown command 'nope'; interp --help lists the commands" in capsys.readouterr().err


def _import_graph() -> dict[str, set[str]]:
    """Every module of the four packages -> the modules it imports, read statically (at
    the top and inside functions; not under ``if TYPE_CHECKING:``, which never runs)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    paths = {}
    for package in ("interp", "caches", "probes", "analyses"):
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            paths[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def resolved(name: str) -> str | None:
        while name and name not in paths:
            name = name.rpartition(".")[0]
        return name or None

    def runs(tree: ast.AST):
        for node in ast.iter_child_nodes(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                yield from (n for child in node.orelse for n in [child, *runs(child)])
                continue
            yield node
            yield from runs(node)

    graph: dict[str, set[str]] = {}
    for module, path in paths.items():
        here = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        found = set()
        for node in runs(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(here[: len(here) - node.level + 1] + ([base] if base else []))
                found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in paths else base
                          for a in node.names}  # fmt: skip
        graph[module] = {m for m in map(resolved, found) if m and m != module}
    return graph


def test_no_module_imports_a_package_downstream_of_its_own() -> None:
    """Data flows interp -> caches -> probes -> analyses: read statically, no module
    imports a later package than its own (the command line is analyses.cli)."""
    order = {"interp": 0, "caches": 1, "probes": 2, "analyses": 3}
    found = [
        f"{module} imports {name}"
        for module, names in _import_graph().items()
        for name in names
        if order[name.split(".")[0]] > order[module.split(".")[0]]
    ]
    assert not found, found


def test_no_modules_import_each_other_round_a_circle() -> None:
    """No two modules import each other, directly or through others (the strongly
    connected components of the import graph are single modules)."""
    graph = _import_graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(module: str) -> None:  # Tarjan's strongly connected components
        index[module] = low[module] = len(index)
        stack.append(module)
        for name in graph[module]:
            if name not in index:
                visit(name)
                low[module] = min(low[module], low[name])
            elif name in stack:
                low[module] = min(low[module], index[name])
        if low[module] == index[module]:
            members = []
            while True:
                members.append(stack.pop())
                if members[-1] == module:
                    break
            if len(members) > 1:
                circles.append(sorted(members))

    for module in graph:
        if module not in index:
            visit(module)
    assert not circles, circles
    assert "interp.stimuli.drawing" in graph["interp.stimuli"]  # the graph is read


def test_the_packages_raise_the_toolkits_own_errors() -> None:
    """A bad value reaching any package is one of the toolkit's errors (a ConfigError is
    still a ValueError), never a plain ValueError the command line cannot name."""
    from pathlib import Path

    from interp import ConfigError
    from interp.organism.twins import twin_pair

    root = Path(__file__).resolve().parents[1]
    plain = [
        f"{path.relative_to(root)}:{k + 1}"
        for package in ("interp", "caches", "probes", "analyses")
        for path in sorted((root / package).rglob("*.py"))
        for k, line in enumerate(path.read_text().splitlines())
        if "raise ValueError(" in line
    ]
    assert not plain, plain
    with pytest.raises(ConfigError, match="kind must be one of"):
        twin_pair("texture", 64)
