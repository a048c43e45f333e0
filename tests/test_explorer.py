"""The patch explorer: its numbers against the toolkit's own functions (the logit lens,
attention to the image, the object under each token, an SAE's features), on the organism
and every family's tiny model (own images of mixed sizes); the page in a real browser
(click a patch, the panel's numbers; switch condition and depth, the overlay); the
``interp view`` command; the notebook widget (tests/test_notebooks.py runs the
example)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from browser import open_page

from analyses.cli import main
from analyses.commands import ViewConfig, view_step
from analyses.commands.view import find_saes
from analyses.explorer import build_view, explorer_widget, view_page, view_table
from interp import ConfigError, StimulusSpec, box_label_map, capture_tokens, generate, load_model
from interp.errors import SiteError
from interp.experiments.attention import attention_to_image
from interp.experiments.interventions import make_intervention
from interp.experiments.lens import lens_logits, word_ranks
from interp.models.sae import SparseAutoencoder
from interp.sources import ArrayImages

CONDITIONS = ["baseline", "shuffle"]
SAE_SITE = "lm.2"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def eager():
    return load_model("organism", attn_implementation="eager")


@pytest.fixture(scope="module")
def stimuli():
    return generate(StimulusSpec(n_images=8, image_size=64, seed=3))


@pytest.fixture(scope="module")
def sae():
    torch.manual_seed(0)
    found = SparseAutoencoder(128, 256, "topk", k=4, seed=1)
    found.metadata = {"hook_name": SAE_SITE}
    return found


@pytest.fixture(scope="module")
def view(eager, stimuli, sae):
    return build_view(
        eager, stimuli, images=[1, 4, 6, 7, 0, 2], conditions=CONDITIONS, saes={SAE_SITE: sae},
        probe="color", batch_size=4,
    )  # fmt: skip


def _reference(eager, stimuli, image: int, condition: str, site: str) -> dict:
    """One image's numbers at an LM site, from the toolkit's own functions called
    directly: the lens's logits, attention to the image, the object under each token."""
    adapter = eager.adapter
    prompt = adapter.default_prompt("Describe the image.")
    picture = stimuli.images[image][None]
    intervention = make_intervention(condition)
    layer = int(site.split(".")[1])
    weights = attention_to_image(
        eager, picture, prompt=prompt, layers=[layer], intervention=intervention
    )[0, 0]  # (heads, tokens)
    hidden = capture_tokens(eager, picture, [site], prompt=prompt, intervention=intervention)
    from interp.experiments.lens import read_out

    logits = read_out(eager, hidden.acts[site][0])  # (tokens, vocab)
    if condition == "baseline":  # the same as the lens's own entry point
        torch.testing.assert_close(logits, lens_logits(eager, picture, site, prompt=prompt)[0])
    layout = adapter.token_layout(site, 64)
    objects = box_label_map(stimuli.object_map[image], layout.boxes)[0]
    colours = stimuli.object_labels()["color"][image]  # (objects,)
    tokenizer = eager.processor.tokenizer
    words = [tokenizer.convert_tokens_to_ids(c) for c in stimuli.label_classes["color"]]
    ranks = np.full(len(objects), np.nan)
    for token, obj in enumerate(objects):
        if obj >= 0:
            ranks[token] = float(word_ranks(logits[token], [words[colours[obj]]])[0])
    return {
        "mean": weights.mean(0).numpy(), "max": weights.amax(0).numpy(),
        "objects": objects, "ranks": ranks, "logits": logits,
    }  # fmt: skip


def test_the_views_numbers_are_the_toolkits(eager, stimuli, sae, view) -> None:
    """Per image, condition and LM site: attention (mean and max over heads) equals
    attention_to_image, the colour word's rank equals word_ranks of the lens's logits for
    the object under each token (box_label_map), the top words are the lens's; the SAE's
    top features are its encode's; the probe, fitted on other images, reads colour far
    above chance at the projector."""
    table = view_table(view.data)
    for image in (4, 7):
        for condition in CONDITIONS:
            for site in ("lm.0", "lm.3"):
                found = table[(table.image == image) & (table.condition == condition)
                              & (table.site == site)].sort_values("token")  # fmt: skip
                expected = _reference(eager, stimuli, image, condition, site)
                np.testing.assert_allclose(found.attention_mean, expected["mean"], rtol=1e-4)
                np.testing.assert_allclose(found.attention_max, expected["max"], rtol=1e-4)
                np.testing.assert_array_equal(found.object, expected["objects"])
                np.testing.assert_array_equal(found["lens_rank:color"], expected["ranks"])
                top = torch.topk(expected["logits"], 5).indices  # (tokens, 5)
                words = eager.processor.tokenizer.convert_ids_to_tokens(top[0].tolist())
                assert found.words.iloc[0] == " ".join(words)
    # Shuffling moves the image tokens: the attention the answer pays them changes.
    lm3 = table[(table.image == 4) & (table.site == "lm.3")]
    assert not np.allclose(
        lm3[lm3.condition == "baseline"].attention_mean,
        lm3[lm3.condition == "shuffle"].attention_mean,
    )
    # The SAE's top features: its own encode of the site's tokens.
    prompt = eager.adapter.default_prompt("Describe the image.")
    tokens = capture_tokens(eager, stimuli.images[[6]], [SAE_SITE], prompt=prompt).acts[SAE_SITE]
    with torch.no_grad():
        features = sae.encode(tokens[0])  # (tokens, d_sae)
    row = table[(table.image == 6) & (table.condition == "baseline") & (table.site == SAE_SITE)]
    for token in (0, 17, 40):
        shown = row.iloc[token].features
        best = torch.topk(features[token], 5)
        expected = [(f, a) for f, a in zip(best.indices.tolist(), best.values.tolist(),
                                           strict=True) if a > 0]  # fmt: skip
        assert [f for f, _ in shown] == [f for f, _ in expected]
        np.testing.assert_allclose([a for _, a in shown], [a for _, a in expected], rtol=1e-3)
    # The probe: colour of the object under each token, out of fold.
    over = table[
        (table.condition == "baseline") & (table.site == "projector") & (table.object >= 0)
    ]
    colours = stimuli.object_labels()["color"]
    truth = colours[over.image.to_numpy(), over.object.to_numpy()]
    accuracy = (over.probe_class.to_numpy() == truth).mean()
    assert accuracy > 2 / len(stimuli.label_classes["color"]), accuracy


def test_bad_settings_are_refused_before_work(eager, stimuli) -> None:
    with pytest.raises(ConfigError, match="not in the data, which has images 0 to 7"):
        build_view(eager, stimuli, images=[3, 8])
    with pytest.raises(SiteError, match="unknown site 'lm.9'"):
        build_view(eager, stimuli, images=[0], sites=["lm.9"])
    with pytest.raises(ConfigError, match="not a categorical label"):
        build_view(eager, stimuli, images=[0], probe="weight")
    narrow = SparseAutoencoder(64, 128, "topk", k=4)
    with pytest.raises(ConfigError, match="reads tokens of width 64, the site's are 128 wide"):
        build_view(eager, stimuli, images=[0], sites=["lm.2"], saes={"lm.2": narrow})
    with pytest.raises(ConfigError, match=r"SAEs of sites \['lm.3'\] that the view does not"):
        build_view(eager, stimuli, images=[0], sites=["lm.2"], saes={"lm.3": narrow})
    with pytest.raises(ConfigError, match="out must name a folder when run is an ImageSet"):
        view_step(ViewConfig(run=stimuli))
    with pytest.raises(ConfigError, match="'no-such-run' does not exist; pass a run folder"):
        view_step(ViewConfig(run="no-such-run"))
    with pytest.raises(ConfigError, match="'.*docs' holds no cache.h5; pass a run folder"):
        view_step(ViewConfig(run=str(ROOT / "docs")))
    with pytest.raises(ConfigError, match="holds no SAE .* interp sae train --out FOLDER"):
        find_saes([str(ROOT / "docs")])


def _click_token(page, view: dict, image: int, site: str, token: int) -> float:
    """Click the centre of a token's box on the overlay; seconds until the panel shows it."""
    shown = view["images"][image]
    layout = view["layouts"][shown["layout"][site]]
    y0, x0, y1, x1 = layout["boxes"][token]
    scale = 420 / max(shown["size"])
    box = page.locator("canvas[data-role=overlay]").bounding_box()
    started = time.perf_counter()
    page.mouse.click(box["x"] + (x0 + x1) / 2 * scale, box["y"] + (y0 + y1) / 2 * scale)
    page.wait_for_selector(f"tr[data-site='{site}'][data-token='{token}']")
    return time.perf_counter() - started


def _panel_value(page, site: str, key: str) -> str:
    return page.locator(f"tr[data-site='{site}'] td[data-key='{key}']").get_attribute("data-value")


def test_the_page_in_a_real_browser(eager, stimuli, view, tmp_path) -> None:
    """The page opened in headless Chromium: clicking a patch shows, at every depth, the
    numbers of the toolkit's own functions for that image and token (lens rank,
    attention, the object under it); switching condition and depth redraws the overlay;
    nothing is asked of the network. A screenshot is left in build/ for the README."""
    path = tmp_path / "view.html"
    path.write_text(view_page(view.data), encoding="utf-8")
    data = view.data
    on_object = int(np.flatnonzero(np.asarray(data["images"][1]["token_object"]["lm.3"]) >= 0)[0])
    with open_page(path, width=1880, height=640) as opened:
        page = opened.page
        page.wait_for_selector("#explorer[data-ready=true]")
        page.locator("img[data-image='1']").click()  # the second image: stimuli image 4
        seconds = _click_token(page, data, 1, "lm.3", on_object)
        expected = _reference(eager, stimuli, 4, "baseline", "lm.3")
        for key in ("attention_mean", "attention_max"):
            found = float(_panel_value(page, "lm.3", key))
            assert found == pytest.approx(expected[key.split("_")[1]][on_object], rel=1e-4)
        rank = float(_panel_value(page, "lm.3", "lens_rank:color"))
        assert rank == expected["ranks"][on_object]
        assert int(_panel_value(page, "lm.3", "label")) == expected["objects"][on_object]
        assert page.locator("tr[data-site]").count() == len(data["sites"])  # every depth
        render_ms = float(page.locator("[data-role=panel]").get_attribute("data-render-ms"))
        assert render_ms < 1000 and seconds < 5

        def overlay() -> str:
            return page.locator("canvas[data-role=overlay]").evaluate("c => c.toDataURL()")

        page.select_option("select[data-role=measure]", "attention_mean")
        page.locator("input[data-role=depth]").fill(str(data["sites"].index("lm.3")))
        before = overlay()
        page.select_option("select[data-role=condition]", "shuffle")
        assert overlay() != before  # the condition's own values
        assert _panel_value(page, "lm.3", "attention_mean") != str(expected["mean"][on_object])
        shuffled = _reference(eager, stimuli, 4, "shuffle", "lm.3")["mean"][on_object]
        assert float(_panel_value(page, "lm.3", "attention_mean")) == pytest.approx(
            shuffled, rel=1e-4
        )
        during = overlay()
        page.locator("input[data-role=depth]").fill(str(data["sites"].index("lm.0")))
        assert overlay() != during
        assert page.locator("canvas[data-role=overlay]").get_attribute("data-site") == "lm.0"
        shot = ROOT / "build" / "explorer.png"
        shot.parent.mkdir(exist_ok=True)
        page.select_option("select[data-role=condition]", "baseline")
        page.locator("input[data-role=depth]").fill(str(data["sites"].index("lm.1")))
        page.locator("img[data-image='0']").click()  # stimuli image 1: three objects
        _click_token(page, data, 0, "lm.1", 27)
        page.screenshot(path=str(shot), full_page=True)
        # New data, as a widget receives it from Python: drawn afresh, once.
        page.evaluate(
            "() => { const d = window.explorerModel.get('data');"
            " window.explorerModel.set('data', {...d, images: d.images.slice(0, 2)}); }"
        )
        assert page.locator("img[data-image]").count() == 2
        assert page.locator(".vi-root").count() == 1
        assert not opened.errors, opened.errors
        assert all(url.startswith(("file:", "data:")) for url in opened.requests)
    print(f"click to panel: {seconds * 1000:.0f} ms (panel drawn in {render_ms:.1f} ms)")


def test_interp_view_writes_a_page_of_a_cache(tmp_path, capsys, monkeypatch) -> None:
    """``interp view FOLDER``: the cache's model, images, sites and conditions; the page
    beside the cache unless --out; refused again without --overwrite; a large page is
    said to be large, with what makes it smaller."""
    import analyses.commands.view as view_module

    folder = tmp_path / "study"
    assert main(["extract", "--out", str(folder), "--n-images", "6", "--sites", "vision.1",
                 "lm.1", "--conditions", "baseline", "shuffle", "--no-progress"]) == 0  # fmt: skip
    saes = tmp_path / "saes"
    sae = SparseAutoencoder(128, 256, "topk", k=4, seed=2)
    sae.metadata = {"hook_name": "lm.1"}
    sae.save(saes / "lm.1" / "topk-x2-k4")  # as interp sae train lays them out
    monkeypatch.setattr(view_module, "LARGE_PAGE", 1000)
    assert main(["view", str(folder), "--n-images", "3", "--probe", "none", "--saes", str(saes),
                 "--no-progress"]) == 0  # fmt: skip
    assert "slow to open and to share; choose sites" in capsys.readouterr().err
    page = (folder / "view.html").read_text()
    assert '"features":{"lm.1":{"d_sae":256' in page
    assert "http://" not in page and "https://" not in page  # offline
    assert '"sites":["vision.1","lm.1"]' in page and '"conditions":["baseline","shuffle"]' in page
    assert main(["view", str(folder), "--no-progress"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["view", str(folder / "cache.h5"), "--images", "5", "--out", str(tmp_path / "o"),
                 "--probe", "none", "--no-progress"]) == 0  # fmt: skip
    assert '"index":5' in (tmp_path / "o" / "view.html").read_text()

    assert main(["view", str(tmp_path / "nothing"), "--no-progress"]) == 2
    assert "does not exist" in capsys.readouterr().err


def _mixed_images() -> ArrayImages:
    """Own images of three sizes (two not square), each with one labelled rectangle."""
    images, maps = [], []
    for k, (height, width) in enumerate([(24, 16), (16, 32), (32, 32)]):
        image = np.full((height, width, 3), 255, dtype=np.uint8)
        found = np.full((height, width), -1, dtype=np.int8)
        image[4:12, 2:10] = (255, 0, 0) if k % 2 else (0, 0, 255)
        found[4:12, 2:10] = 0
        images.append(image)
        maps.append(found)
    return ArrayImages(
        images, object_maps=maps, labels={"color": np.array([2, 0, 2])},
        classes={"color": ("red", "green", "blue")},
    )  # fmt: skip


@pytest.mark.parametrize(
    "family", ["llava_next", "paligemma", "gemma3", "qwen2_vl", "idefics3", "clip"]
)
def test_every_family_is_explored_on_images_of_mixed_sizes(family, tmp_path) -> None:
    """Each family's tiny model (crops, tiles, merged tokens, an encoder) on own images
    of three sizes: every token's box lies in its image, the object under each token is
    box_label_map's, attention (VLMs) equals attention_to_image for each image, and the
    page draws it without an error."""
    import tiny_vlms

    if family == "clip":
        folder = tiny_vlms.build_encoder("clip", tmp_path / family)
    else:
        folder = getattr(tiny_vlms, f"build_{family}")(tmp_path / family)
    loaded = load_model(folder, attn_implementation="eager")
    data = _mixed_images()
    adapter = loaded.adapter
    sites = [adapter.sites()[0], adapter.sites()[-1]]
    view = build_view(loaded, data, images=[0, 1, 2], sites=sites, probe=None, batch_size=2).data
    table = view_table(view)
    for image in view["images"]:
        height, width = image["size"]
        for site in sites:
            layout = view["layouts"][image["layout"][site]]
            boxes = np.asarray(layout["boxes"])
            assert (boxes[:, [2, 3]] <= [height + 1e-3, width + 1e-3]).all()
            expected = box_label_map(data.crop_maps([image["index"]])[0], boxes)[0]
            assert image["token_object"][site] == expected.tolist()
    last = sites[-1]
    if adapter.has_language_model:
        prompt = adapter.default_prompt("Describe the image.")
        for i in range(3):
            weights = attention_to_image(loaded, data.crops([i]), prompt=prompt,
                                         layers=[int(last.split(".")[1])])[0, 0]  # fmt: skip
            found = table[(table.image == i) & (table.site == last)
                          & (table.condition == "baseline")].sort_values("token")  # fmt: skip
            np.testing.assert_allclose(found.attention_mean, weights.mean(0).numpy(), rtol=1e-4)
        assert "lens_rank:color" in table
    else:
        assert not view["measures"] and "attention_mean" not in table
    assert explorer_widget(view).data == view  # the notebook form holds the same data
    path = tmp_path / "view.html"
    path.write_text(view_page(view), encoding="utf-8")
    with open_page(path) as opened:
        opened.page.wait_for_selector("#explorer[data-ready=true]")
        boxes = np.asarray(view["layouts"][view["images"][0]["layout"][last]]["boxes"])
        crops = np.asarray(view["layouts"][view["images"][0]["layout"][last]]["crops"])
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        finest = int(np.lexsort((-crops, np.where(area > 0, area, np.inf)))[0])  # drawn on top
        _click_token(opened.page, view, 0, last, finest)
        assert not opened.errors, opened.errors
