"""The staged commands: extract once, then probe, pixels, plot, report and info, each
reading what the one before wrote."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess

import pandas as pd
import pytest

import analyses.commands.probe as steps
from analyses.cli import main
from analyses.commands import ExtractConfig, PlotConfig, ProbeConfig
from caches import cache_info

FAST = ["--no-progress", "--n-splits", "2", "--n-boot", "20"]
SITES = ["vision.0", "projector", "lm.3"]


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def cache(tiny_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("staged") / "cache.h5"
    argv = ["extract", "--model", tiny_dir, "--out", str(path), "--n-images", "24"]
    assert main([*argv, "--sites", *SITES, "--no-progress"]) == 0
    return path


def test_info_says_what_a_cache_holds(cache, capsys) -> None:
    capsys.readouterr()
    assert main(["info", str(cache)]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"state:\s+complete", printed)
    assert re.search(r"sites:\s+vision.0 projector lm.3", printed)
    assert re.search(r"conditions:\s+baseline shuffle lower_mask", printed)
    assert re.search(r"images:\s+24", printed) and "schema version" in printed
    info = cache_info(cache)
    assert info["family"] == "LLaVA-1.5" and info["pixels stored"] is True
    assert main(["info", str(cache.parent / "none.h5")]) == 2


def test_probe_never_writes_the_cache_resumes_and_extends(cache, tmp_path, monkeypatch) -> None:
    before = _digest(cache)
    out = tmp_path / "probes.csv"
    base = ["probe", str(cache), "--out", str(out), *FAST, "--conditions", "baseline"]
    assert main([*base, "--selections", "mean"]) == 0
    assert _digest(cache) == before  # never written to
    first = pd.read_csv(out)
    assert set(first.selection) == {"mean"} and set(first.site) == set(SITES)
    assert json.loads(steps.settings_path(out).read_text())["n_splits"] == 2

    # Adding a selection probes only its cells; the old rows are kept as they were.
    calls = []
    real = steps.sweep
    monkeypatch.setattr(steps, "sweep", lambda *a, **k: calls.append(k["done"]) or real(*a, **k))
    assert main([*base, "--selections", "mean", "token"]) == 0
    extended = pd.read_csv(out)
    assert len(calls[-1]) == len(first)  # every earlier cell was passed as done
    pd.testing.assert_frame_equal(
        extended[extended.selection == "mean"].reset_index(drop=True), first
    )
    # ... and the result equals a table probed at once.
    once = tmp_path / "once.csv"
    assert main([*base, "--selections", "mean", "token", "--out", str(once)]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(once), extended)

    # Interrupted after its first site, a probe resumes from the rows it kept.
    fresh = tmp_path / "fresh.csv"
    seen = []

    def stop_after_one(*args, **kwargs):
        keep = kwargs["on_site"]

        def once_then_stop(rows):
            keep(rows)
            seen.append(len(rows))
            raise KeyboardInterrupt

        return real(*args, **{**kwargs, "on_site": once_then_stop})

    monkeypatch.setattr(steps, "sweep", stop_after_one)
    argv = [*base, "--selections", "mean", "token", "--out", str(fresh)]
    assert main(argv) == 130
    partial = fresh.with_name("fresh.csv.partial")
    assert partial.exists() and not fresh.exists() and len(pd.read_csv(partial)) == seen[0]
    monkeypatch.setattr(steps, "sweep", lambda *a, **k: calls.append(k["done"]) or real(*a, **k))
    assert main(argv) == 0
    assert len(calls[-1]) == seen[0] and not partial.exists()
    pd.testing.assert_frame_equal(pd.read_csv(fresh), extended)
    assert _digest(cache) == before

    # Other settings are refused, naming the difference; overwrite starts again.
    assert main([*base, "--selections", "mean", "--seed", "3"]) == 2
    assert main([*base, "--selections", "mean", "--seed", "3", "--overwrite"]) == 0


def test_probe_settings_are_checked(cache) -> None:
    with pytest.raises(Exception, match="n_splits must be >= 2"):
        ProbeConfig(cache=str(cache), n_splits=1)
    with pytest.raises(Exception, match="cache must name a cache file"):
        ProbeConfig()


def test_pixels_plot_and_report(cache, tmp_path, capsys) -> None:
    pixels = tmp_path / "pixels"
    assert main(["pixels", str(cache), "--out", str(pixels), *FAST]) == 0
    table = pd.read_csv(pixels / "pixel_reconstruction.csv")
    assert set(table.site) == set(SITES) and set(table.metric) == {"mae", "psnr"}
    assert (pixels / "pixel_reconstructions.png").stat().st_size > 0
    assert main(["pixels", str(cache), "--out", str(pixels), *FAST]) == 2  # exists
    probes = tmp_path / "probes.csv"
    argv = ["probe", str(cache), "--out", str(probes), *FAST, "--selections", "mean", "token"]
    assert main([*argv, "random_1", "random_8"]) == 0
    figures = tmp_path / "figures"
    assert main(["plot", str(probes), "--out", str(figures)]) == 0
    assert sorted(p.name for p in figures.iterdir()) == [
        "layer_attribute_map.html",
        "redundancy_curves.html",
    ]
    html = (figures / "layer_attribute_map.html").read_text()
    assert "token selection; above chance" in html  # the most informative selection, normalised
    assert main(["plot", str(pixels / "pixel_reconstruction.csv"), "--out", str(figures)]) == 0
    assert (figures / "pixel_error_by_depth.html").exists()
    with pytest.raises(
        Exception, match="formats must be one of html, pdf, svg, png, got \\['gif'\\]"
    ):
        PlotConfig(tables=[str(probes)], formats=["gif"])
    with pytest.raises(Exception, match="score must be one of"):
        PlotConfig(tables=[str(probes)], score="f1")
    with pytest.raises(Exception, match="tables must name a probe table"):
        PlotConfig()
    with pytest.raises(Exception, match="out must name an output folder"):
        ExtractConfig(out=" ")
    assert main(["plot", str(probes), "--out", str(tmp_path / "f2"), "--format", "html"]) == 0
    assert main(["plot", str(tmp_path / "none.csv"), "--out", str(figures)]) == 2
    # A report of a folder: the run's tables, figures and pictures in one page.
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(probes, run_dir / "probes.csv")
    shutil.copy(cache, run_dir / "cache.h5")
    for name in ("pixel_reconstruction.csv", "pixel_reconstructions.png"):
        shutil.copy(pixels / name, run_dir / name)
    assert main(["report", str(run_dir)]) == 0
    page = (run_dir / "report.html").read_text()
    assert page.count("plotly.js v") <= 2 and "data:image/png;base64," in page
    assert "layer attribute map" in page and "pixel error by depth" in page
    assert "LLaVA-1.5" in page and "<details>" in page
    assert not re.search(r"<script[^>]+src=\"http", page)  # self-contained: no remote script
    assert main(["report", str(tmp_path / "empty")]) == 2


def test_static_figures_are_valid_pdf_svg_and_png(cache, tmp_path) -> None:
    """A PDF of the size the theme asks for (points), an SVG and a PNG; and the HTML
    figure rendered by headless Chromium is not blank."""
    chrome = shutil.which("chromium") or shutil.which("chromium-browser")
    if chrome is None:
        pytest.skip("no Chromium: `make test` installs Debian's chromium")
    probes = tmp_path / "probes.csv"
    argv = ["probe", str(cache), "--out", str(probes), *FAST, "--selections", "mean"]
    assert main([*argv, "--conditions", "baseline"]) == 0
    figures = tmp_path / "figures"
    argv = ["plot", str(probes), "--out", str(figures), "--formats", "html", "pdf", "svg", "png"]
    assert main(argv) == 0
    pdf = (figures / "layer_attribute_map.pdf").read_bytes()
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    box = re.search(rb"MediaBox\s*\[\s*0\s+0\s+([\d.]+)\s+([\d.]+)\s*\]", pdf)
    assert box is not None and abs(float(box.group(1)) - 504) < 2  # two columns: 7 in
    svg = (figures / "layer_attribute_map.svg").read_text()
    assert svg.lstrip().startswith("<svg") and 'width="672"' in svg
    from PIL import Image

    with Image.open(figures / "layer_attribute_map.png") as png:
        assert png.size[0] == 672
    shot = tmp_path / "shot.png"
    subprocess.run(
        [chrome, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
         "--window-size=800,600", "--virtual-time-budget=5000",
         (figures / "layer_attribute_map.html").as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    with Image.open(shot) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 50  # drawn: many colours, not one blank page


def test_sweep_reads_a_capture_in_memory_as_it_reads_a_cache(loaded, tmp_path) -> None:
    """The same images captured in memory and extracted to a float32 cache give the same
    probe table (the probes read both through caches.ActivationSet)."""
    from caches import ActivationSet, CacheReader, MemoryCache, capture_set, extract
    from interp import StimulusSpec, generate
    from probes import ProbeSettings, pixel_sweep, sweep

    stimuli = generate(StimulusSpec(n_images=24, seed=4))
    sites = ["vision.0", "lm.3"]
    memory = capture_set(loaded, stimuli, sites=sites, conditions=["shuffle"], batch_size=8)
    assert isinstance(memory, MemoryCache) and isinstance(memory, ActivationSet)
    assert memory.conditions == ["baseline", "shuffle"] and memory.sites == sites
    path = extract(
        loaded, stimuli, tmp_path / "c.h5", sites=sites, conditions=["baseline", "shuffle"],
        batch_size=8, store_dtype="float32", progress=False,
    )  # fmt: skip
    settings = ProbeSettings(n_splits=2, n_boot=20)
    kwargs = dict(selections=["mean", "token"], settings=settings, progress=False)
    with CacheReader(path) as reader:
        assert isinstance(reader, ActivationSet)
        expected = sweep(reader, **kwargs)
        pixels_expected, _ = pixel_sweep(reader, n_splits=2, n_boot=20, progress=False)
    pd.testing.assert_frame_equal(sweep(memory, **kwargs), expected)
    found, _ = pixel_sweep(memory, n_splits=2, n_boot=20, progress=False)
    pd.testing.assert_frame_equal(found, pixels_expected, atol=1e-6)


def test_parameterised_conditions_through_extract_and_probe(tiny_dir, tmp_path, capsys) -> None:
    """mask:A-B and shuffle:SEED are conditions like the others: in the cache under their
    names (with their parameters), in the probe table, in info."""
    cache = tmp_path / "c.h5"
    argv = ["extract", "--model", tiny_dir, "--out", str(cache), "--n-images", "12"]
    argv += ["--sites", "lm.0", "lm.3", "--conditions", "baseline", "mask:1-02", "shuffle:3"]
    argv += ["patch:lm.3", "drop:norm:8"]
    assert main([*argv, "--no-progress"]) == 0
    info = cache_info(cache)
    assert info["conditions"] == ["baseline", "mask:1-2", "shuffle:3", "patch:lm.3", "drop:norm:8"]
    from caches import CacheReader

    with CacheReader(cache) as reader:
        assert reader.intervention("mask:1-2") == {"layers": [1, 2], "text_only": False}
        assert reader.intervention("shuffle:3")["seed"] == 3
        partners = reader.intervention("patch:lm.3")["partners"]
        assert sorted(partners) == list(range(12)) and all(p != i for i, p in enumerate(partners))
        assert reader.same_as_baseline("lm.0", "patch:lm.3")  # below the patched site
        assert reader.intervention("drop:norm:8") == {"policy": "norm", "k": 8, "seed": 0}
        assert reader.same_as_baseline("lm.0", "mask:1-2")  # below the window
        assert not reader.same_as_baseline("lm.3", "mask:1-2")
    out = tmp_path / "p.csv"
    assert main(["probe", str(cache), "--out", str(out), *FAST, "--selections", "mean"]) == 0
    assert set(pd.read_csv(out).condition) == set(info["conditions"])
    capsys.readouterr()
    assert main([*argv[:-1], "mask:1-9", "--out", str(tmp_path / "d.h5")]) == 2
    assert "mask:1-9 reaches LM layer 9" in capsys.readouterr().err


def test_the_report_renders_in_a_real_browser(cache, tmp_path) -> None:
    """The run report opened in headless Chromium: every figure draws (plotly's SVG in
    each figure's box), the page raises and logs no error, and it loads nothing from the
    network."""
    from browser import open_page

    run_dir = tmp_path / "run"
    argv = ["probe", str(cache), "--out", str(run_dir), *FAST, "--selections", "mean"]
    assert main([*argv, "--conditions", "baseline"]) == 0
    shutil.copy(cache, run_dir / "cache.h5")
    assert main(["report", str(run_dir)]) == 0
    page_path = run_dir / "report.html"
    figures = page_path.read_text().count('class="plotly-graph-div"')
    assert figures >= 1
    with open_page(page_path) as opened:
        page = opened.page
        page.wait_for_function(
            f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {figures}",
            timeout=30_000,
        )
        drawn = page.eval_on_selector_all(".js-plotly-plot", "plots => plots.length")
        assert drawn == figures
        marks = page.eval_on_selector_all(
            ".js-plotly-plot .heatmaplayer image, .js-plotly-plot path.point, "
            ".js-plotly-plot .trace",
            "marks => marks.length",
        )
        assert marks > 0  # data drawn, not only axes
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        assert opened.errors == []
        assert opened.requests and not [u for u in opened.requests if u.startswith("http")]
    assert (tmp_path / "report.png").stat().st_size > 10_000
