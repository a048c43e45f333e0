"""Images of mixed sizes: every site stored ragged (flat tokens + per-image offsets).

Qwen2-VL gives a different number of tokens per image size; each image's stored tokens
must equal a capture of that image alone, its layout the adapter's for its size, and a
crash mid-run must resume to the same file. The built-in LLaVA resizes every image to
one grid, so its counts agree but its boxes do not: the whole run probes it per image.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny_vlms import build_llava_next, build_qwen2_vl

import caches.extraction as extract_module
from analyses import RunConfig, run
from caches import CacheReader, CacheWriter, SiteTokens, extract
from caches.writer import partial_path
from interp import CacheError, ConfigError, StimulusSpec, capture_tokens, generate, load_model
from interp.experiments.interventions import make_intervention
from interp.layout import TokenLayout, box_label_map
from probes.sweep import site_labels

SIZES = (16, 24)  # Qwen2-VL: 4x4 and 6x6 patches, 2x2 and 3x3 merged tokens
SITES = ["vision.0", "projector", "lm.1"]


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    return load_model(build_qwen2_vl(tmp_path_factory.mktemp("qwen-ragged"), version="2"))


@pytest.fixture(scope="module")
def mixed():
    return generate(StimulusSpec(n_images=5, image_sizes=SIZES, seed=2))


@pytest.fixture(scope="module")
def ragged_path(qwen, mixed, tmp_path_factory):
    path = tmp_path_factory.mktemp("ragged") / "c.h5"
    return extract(
        qwen, mixed, path, sites=SITES, conditions=["baseline", "shuffle"], batch_size=3,
        progress=False,
    )  # fmt: skip


def _assert_each_image_equals_a_capture_alone(loaded, mixed, reader, sites) -> None:
    """Under baseline and shuffle, each image's stored patch and extra tokens equal a
    capture of that image by itself (float16 as stored)."""
    prompt = loaded.adapter.default_prompt("Describe the image.")
    for condition in ("baseline", "shuffle"):
        for i in range(len(mixed)):
            alone = capture_tokens(
                loaded, mixed.image(i)[None], sites, prompt=prompt,
                intervention=make_intervention(condition),
            )  # fmt: skip
            for site in sites:
                for stored, offsets, fresh in (
                    (reader.acts(site, condition), reader.offsets(site), alone.acts),
                    (reader.extra_acts(site, condition), reader.extra_offsets(site), alone.extra),
                ):
                    if site not in fresh:
                        continue
                    lo, hi = offsets[i : i + 2]
                    expected = fresh[site][0].to(torch.float16).float().numpy()
                    np.testing.assert_allclose(
                        stored[lo:hi].astype(np.float32), expected, rtol=2e-3, atol=2e-3
                    )


def test_stimuli_of_mixed_sizes() -> None:
    spec = StimulusSpec(n_images=4, image_sizes=(32, 48), seed=5)
    mixed = generate(spec)
    assert spec.image_size == 48 and mixed.images.shape == (4, 48, 48, 3)
    assert mixed.sizes.tolist() == [[32, 32], [48, 48], [32, 32], [48, 48]]
    alone = generate(StimulusSpec(n_images=3, image_size=32, seed=5))
    np.testing.assert_array_equal(mixed.image(0), alone.images[0])  # drawn at its own size
    np.testing.assert_array_equal(mixed.images[2, 32:], 255)  # padded with the background
    assert (mixed.object_map[2, :, 32:] == -1).all()
    with pytest.raises(ConfigError, match="leave image_size out"):
        StimulusSpec(image_size=40, image_sizes=(32, 48))
    with pytest.raises(ConfigError, match=">= 16 px"):
        StimulusSpec(image_sizes=(8, 32))


def test_each_images_tokens_equal_a_capture_of_it_alone(qwen, mixed, ragged_path) -> None:
    adapter = qwen.adapter
    with CacheReader(ragged_path) as reader:
        assert reader.image_sizes.tolist() == mixed.sizes.tolist()
        for site in SITES:
            assert reader.is_ragged(site)
            offsets = reader.offsets(site)
            counts = [len(adapter.token_layout(site, hw)) for hw in mixed.sizes]
            assert np.diff(offsets).tolist() == counts and len(set(counts)) == 2
            assert reader.acts(site).shape == (offsets[-1], reader.acts(site).shape[-1])
            with pytest.raises(CacheError, match="stored ragged.*site_tokens"):
                reader.site_array(site)
            tokens = reader.site_tokens(site)
            np.testing.assert_allclose(
                reader.mean_pooled(site, chunk=2),
                [tokens.image(i).mean(0) for i in range(len(mixed))],
                rtol=1e-6,
                atol=1e-6,
            )
            for i, size in enumerate(mixed.sizes.tolist()):
                expected = adapter.token_layout(site, size)
                np.testing.assert_array_equal(reader.layout(site, image=i).boxes, expected.boxes)
                np.testing.assert_array_equal(reader.layout(site, image=i).grid, expected.grid)
        _assert_each_image_equals_a_capture_alone(qwen, mixed, reader, SITES)
        described = reader.intervention("shuffle")["by_image_size"]
        assert sorted(described) == ["16", "24"]
        assert sorted(described["24"]["permutation"]) == list(range(9))


def test_bad_ragged_inputs_are_refused(ragged_path, tmp_path) -> None:
    with pytest.raises(CacheError, match="token offsets must rise from 0 to the 5 tokens"):
        SiteTokens(np.zeros((5, 2), np.float32), np.array([0, 3, 2, 5]))
    with (
        CacheReader(ragged_path) as reader,
        pytest.raises(CacheError, match=r"image must be an index in 0..4 .*got 5"),
    ):
        reader.layout("projector", image=5)
    images, maps = np.zeros((2, 8, 8, 3), np.uint8), np.zeros((2, 8, 8), np.int8)
    one = TokenLayout.regular(2, 2, 8)
    with (
        CacheWriter(tmp_path / "a.h5", {"sites": ["vision.0"]}) as writer,
        pytest.raises(CacheError, match="has 1 layouts for 2 images"),
    ):
        writer.write_static(images, maps, {}, {}, {"vision.0": [one]})
    with (
        CacheWriter(tmp_path / "b.h5", {"sites": ["vision.0"]}) as writer,
        pytest.raises(CacheError, match=r"must give a \(height, width\) per image within the 8x8"),
    ):
        writer.write_static(
            images, maps, {}, {}, {"vision.0": one}, sizes=np.array([[8, 8], [8, 9]])
        )


def test_labels_of_a_ragged_site_come_from_each_images_boxes(qwen, mixed, ragged_path) -> None:
    with CacheReader(ragged_path) as reader:
        labels = site_labels(reader, ["color"], "projector")
        offsets = reader.offsets("projector")
        for i, (side, _) in enumerate(mixed.sizes.tolist()):
            boxes = qwen.adapter.token_layout("projector", side).boxes
            expected = box_label_map(mixed.object_map[i, :side, :side], boxes)[0]
            found = labels.token_objects[offsets[i] : offsets[i + 1]]
            np.testing.assert_array_equal(found, expected)


def test_a_ragged_run_resumes_to_the_same_file(qwen, mixed, ragged_path, tmp_path, monkeypatch):
    real = extract_module.capture_tokens
    calls = {"n": 0}

    def crashing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2 * 2:  # the first batch: two sizes x two conditions
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    target = tmp_path / "c.h5"
    monkeypatch.setattr(extract_module, "capture_tokens", crashing)
    with pytest.raises(KeyboardInterrupt):
        extract(
            qwen, mixed, target, sites=SITES, conditions=["baseline", "shuffle"], batch_size=3,
            progress=False,
        )  # fmt: skip
    with CacheReader(partial_path(target), allow_incomplete=True) as partial:
        assert partial.n_written == 3
    monkeypatch.setattr(extract_module, "capture_tokens", real)
    extract(
        qwen, mixed, target, sites=SITES, conditions=["baseline", "shuffle"], batch_size=3,
        progress=False,
    )  # fmt: skip
    with CacheReader(target) as a, CacheReader(ragged_path) as b:
        for condition in ("baseline", "shuffle"):
            for site in SITES:
                np.testing.assert_array_equal(
                    a.acts(site, condition)[()], b.acts(site, condition)[()]
                )


def test_llava_next_newlines_are_stored_ragged_too(tmp_path) -> None:
    """LLaVA-NeXT on 16 and 32 px images: a different canvas per size, so different
    patch and newline counts; both kinds of token, per image, equal a capture of the
    image alone."""
    loaded = load_model(build_llava_next(tmp_path / "next"))
    mixed = generate(StimulusSpec(n_images=4, image_sizes=(16, 32), seed=3))
    sites = ["vision.0", "lm.0"]
    path = extract(
        loaded, mixed, tmp_path / "c.h5", sites=sites, conditions=["baseline", "shuffle"],
        batch_size=4, progress=False,
    )  # fmt: skip
    with CacheReader(path) as reader:
        assert np.diff(reader.offsets("lm.0")).tolist() == [32, 80, 32, 80]
        assert np.diff(reader.extra_offsets("lm.0")).tolist() == [4, 8, 4, 8]
        assert reader.layout("lm.0", image=1).extra == ("newline",) * 8
        _assert_each_image_equals_a_capture_alone(loaded, mixed, reader, sites)


def test_the_whole_run_on_mixed_sizes(tiny_dir, tmp_path) -> None:
    """LLaVA resizes every image to its grid: equal counts, per-image boxes. Probes and
    the pixel probe run on every site."""
    result = run(
        RunConfig(
            out=str(tmp_path / "r"), model=tiny_dir, n_images=20, image_sizes=[32, 64],
            n_splits=2, n_boot=50, sites=["vision.0", "lm.3"], conditions=["baseline"],
            selections=["mean", "on_object", "token", "random_1"], progress=False,
        )
    )  # fmt: skip
    table = result.table
    assert set(table.site) == {"vision.0", "lm.3"}
    assert set(table.selection) == {"mean", "on_object", "token", "random_1"}
    accuracy = table[table.metric == "accuracy"]
    assert accuracy["value"].between(0, 1).all()
    assert set(table[table.metric == "r2"].attribute) == {"x", "y"}
    assert (table[table.metric == "r2"]["value"] <= 1).all()
    assert set(result.tables.get("pixels").site) == {"vision.0", "lm.3"}
    with CacheReader(result.paths["cache"]) as reader:
        assert reader.is_ragged("vision.0") and not reader.site_tokens("lm.3").ragged
        stimuli = json.loads(json.dumps(reader.attrs["stimuli"]))
        assert stimuli["image_sizes"] == [32, 64]
        small = reader.layout("vision.0", image=0).boxes  # image 0 is 32 px
        assert small.max() == 32 and reader.layout("vision.0", image=1).boxes.max() == 64
    with pytest.raises(ConfigError, match="not both"):
        RunConfig(image_size=32, image_sizes=[32, 64])
