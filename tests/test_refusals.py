"""Refusals of rank-file caches, image embeddings, paired evaluation and Mixture-of-Features
probes: each bad input gets its message."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd
import pytest

from analyses.commands import MofConfig, PairsEvalConfig, pairs_eval_step
from analyses.paired import paired_accuracy
from caches import CacheReader, extract
from caches.embeddings import cached_embeddings
from caches.info import cache_info
from caches.parts import publish_parts
from interp import CacheError, ConfigError, StimulusSpec, generate
from interp.experiments.embeddings import embed_batch
from probes.mixture import mixture_sweep


@pytest.fixture(scope="module")
def two_parts(loaded, tmp_path_factory):
    """Two caches of images 0-3 and 4-7 of one set, marked as rank files of it."""
    folder = tmp_path_factory.mktemp("parts")
    data = generate(StimulusSpec(n_images=8, seed=1))
    whole = extract(loaded, data, folder / "whole.h5", sites="lm.0", conditions="baseline",
                    progress=False)  # fmt: skip
    names: list[str] = []
    with h5py.File(whole, "r") as source:
        source.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
    paths = []
    for rank, (start, stop) in enumerate(((0, 4), (4, 8))):
        path = folder / f"cache.rank{rank}.h5"
        with h5py.File(whole, "r") as source, h5py.File(path, "w") as part:
            for key, value in source.attrs.items():
                part.attrs[key] = value
            part.attrs["part"] = json.dumps(
                {"rank": rank, "ranks": 2, "start": start, "stop": stop}
            )
            part.attrs["n_images"] = part.attrs["n_written"] = stop - start
            for name in names:
                values = source[name][()]
                per_image = not name.startswith("layout/")
                part.create_dataset(name, data=values[start:stop] if per_image else values)
                part[name].attrs.update(dict(source[name].attrs))
        paths.append(path)
    return folder, paths, whole


def test_published_parts_are_checked(two_parts) -> None:
    folder, paths, whole = two_parts
    with pytest.raises(CacheError, match="expected them to start at 0"):
        publish_parts(folder / "x.h5", paths[::-1], {})
    with pytest.raises(CacheError, match="is not a finished rank file"):
        publish_parts(folder / "x.h5", [whole], {})
    master = publish_parts(folder / "cache.h5", paths, dict(h5py.File(whole, "r").attrs))
    with CacheReader(master) as reader, CacheReader(whole) as single:
        np.testing.assert_array_equal(reader.acts("lm.0")[()], single.acts("lm.0")[()])
    # a rank file of another run (other settings, the same images) put in its place
    with h5py.File(paths[1], "a") as part:
        prompt = part.attrs["prompt"]
        part.attrs["prompt"] = "USER: <image>\nanother run's question ASSISTANT:"
    with pytest.raises(CacheError, match="replaced by a rank file of another extraction"):
        CacheReader(master)
    with pytest.raises(CacheError, match="replaced by a rank file"):
        cache_info(master)
    with h5py.File(paths[1], "a") as part:
        part.attrs["prompt"] = prompt
    CacheReader(master).close()
    with h5py.File(paths[1], "a") as part:
        part.attrs["part"] = json.dumps({"rank": 1, "ranks": 2, "start": 4, "stop": 7})
    with pytest.raises(CacheError, match="now holds other images"):
        CacheReader(master)


def test_embedding_refusals(loaded, monkeypatch, tmp_path) -> None:
    images = generate(StimulusSpec(n_images=2, seed=0)).images
    with pytest.raises(ConfigError, match="embedding must be one of"):
        embed_batch(loaded, images, "cls")
    monkeypatch.setattr(type(loaded.adapter), "pixel_tower", False)
    with pytest.raises(ConfigError, match="takes pixel_values alone"):
        embed_batch(loaded, images)
    broken = tmp_path / "embeddings.h5"
    broken.write_bytes(b"not hdf5")
    with pytest.raises(CacheError, match="not a readable embeddings file"):
        cached_embeddings(broken, "a", {}, lambda: np.zeros((2, 2)))


def test_pairs_eval_refusals(tmp_path) -> None:
    with pytest.raises(ConfigError, match="no pairs table at"):
        pairs_eval_step(PairsEvalConfig(pairs=str(tmp_path / "none.csv"), out=str(tmp_path / "o")))
    pd.DataFrame({"a": [0]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ConfigError, match="needs the columns i and j"):
        pairs_eval_step(PairsEvalConfig(pairs=str(tmp_path / "bad.csv"), out=str(tmp_path / "o")))
    pd.DataFrame({"i": [0], "j": [1]}).to_csv(tmp_path / "pairs.csv", index=False)
    with pytest.raises(ConfigError, match="no pairs.json beside it"):
        pairs_eval_step(PairsEvalConfig(pairs=str(tmp_path / "pairs.csv"), out=str(tmp_path / "o")))
    rows = pd.DataFrame({"condition": ["baseline"], "image": [0], "question_type": ["t"],
                         "correct": [True]})  # fmt: skip
    with pytest.raises(ConfigError, match="no chance level for question types"):
        paired_accuracy(rows, pd.DataFrame({"i": [0], "j": [1]}), {})
    with pytest.raises(ConfigError, match="needs the columns i and j"):
        paired_accuracy(rows, pd.DataFrame({"a": [0]}), {"t": 0.5})


def test_mixture_refusals(loaded, tmp_path) -> None:
    with pytest.raises(ConfigError, match="caches must name two caches"):
        MofConfig(caches=["one.h5"])
    with pytest.raises(ConfigError, match="caches names 'base.h5' twice; give two caches"):
        MofConfig(caches=["base.h5", "base.h5"])
    path = extract(loaded, generate(StimulusSpec(n_images=6, seed=1)), tmp_path / "c.h5",
                   sites="vision.0", conditions="baseline", progress=False)  # fmt: skip
    with CacheReader(path) as a, CacheReader(path) as b:
        with pytest.raises(ConfigError, match="selections must be among"):
            mixture_sweep(a, b, "vision.0", "vision.0", selections=["random_4"])
        with pytest.raises(ConfigError, match=r"\['x'\] are not categorical labels"):
            mixture_sweep(a, b, "vision.0", "vision.0", attributes=["x"])
