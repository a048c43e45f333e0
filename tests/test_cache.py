"""The HDF5 cache: schema, fidelity, resume, refusals, and reading with other tools."""

from __future__ import annotations

import json
import shutil
import subprocess

import h5py
import numpy as np
import pytest
import torch
from references import hooked_forward

import caches.extraction as extract_module
from caches import SCHEMA_VERSION, CacheReader, extract
from caches.writer import partial_path
from interp import (
    CacheError,
    ConfigError,
    OutputExistsError,
    SiteError,
    StimulusSpec,
    capture,
    generate,
    load_model,
    make_intervention,
)

SITES = ["vision.0", "projector", "lm.3"]


@pytest.fixture(scope="module")
def small():
    return generate(StimulusSpec(n_images=10, seed=4))


@pytest.fixture(scope="module")
def cache_path(loaded, small, tmp_path_factory):
    path = tmp_path_factory.mktemp("cache") / "cache.h5"
    return extract(loaded, small, path, sites=SITES, batch_size=4, progress=False)


def test_schema_with_plain_h5py(cache_path, loaded, small, prompt) -> None:
    with h5py.File(cache_path, "r") as f:
        attrs = f.attrs
        assert attrs["schema_version"] == SCHEMA_VERSION
        assert attrs["model"] == loaded.source
        assert attrs["prompt"] == prompt and "<image>" in attrs["prompt"]
        assert json.loads(attrs["stimuli"]) == json.loads(json.dumps(small.spec.to_dict()))
        assert json.loads(attrs["sites"]) == SITES
        assert json.loads(attrs["conditions"]) == ["baseline", "shuffle", "lower_mask"]
        assert bool(attrs["complete"]) and attrs["n_written"] == 10
        assert isinstance(attrs["toolkit_version"], str)
        assert f["images/pixels"].dtype == np.uint8 and f["images/pixels"].shape == (10, 64, 64, 3)
        np.testing.assert_array_equal(f["images/pixels"][()], small.images)
        np.testing.assert_array_equal(f["labels/color"][()], small.labels["color"])
        assert json.loads(f["labels/color"].attrs["classes"])[0] == "red"
        for site in SITES:
            assert f[f"layout/{site}/boxes"].shape == (64, 4)
            assert f[f"layout/{site}/grid"].shape == (64, 2)
            ds = f[f"acts/{site}"]
            assert ds.dtype == np.float16 and ds.shape == (10, 64, 64) and ds.chunks == (1, 64, 64)
            assert f[f"ablations/shuffle/{site}"].shape == ds.shape
        described = json.loads(f["ablations/lower_mask"].attrs["intervention"])
        assert described == {"fraction": 0.25, "layers": [0, 1]}


def test_cached_values_equal_capture(cache_path, loaded, small, prompt) -> None:
    with CacheReader(cache_path) as reader:
        for condition in reader.conditions:
            fresh = capture(
                loaded,
                small.images[4:8],
                SITES,
                prompt=prompt,
                intervention=make_intervention(condition),
            )
            for site in SITES:
                stored = torch.from_numpy(reader.acts(site, condition)[4:8].astype(np.float32))
                expected = fresh[site].to(torch.float16).to(torch.float32)
                torch.testing.assert_close(stored, expected, rtol=0, atol=0)
        pooled = reader.mean_pooled("lm.3", chunk=3)
        full = reader.acts("lm.3")[()].astype(np.float32).mean(1)
        np.testing.assert_allclose(pooled, full, rtol=1e-6)


def test_resume_after_a_crash_gives_the_same_file(loaded, small, tmp_path, monkeypatch) -> None:
    clean = extract(loaded, small, tmp_path / "clean.h5", sites=SITES, batch_size=4, progress=False)
    calls = {"n": 0}
    real_capture = extract_module.capture_tokens

    def crashing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 3 * 2:  # two batches of three conditions, then a crash
            raise KeyboardInterrupt
        return real_capture(*args, **kwargs)

    target = tmp_path / "out.h5"
    monkeypatch.setattr(extract_module, "capture_tokens", crashing)
    with pytest.raises(KeyboardInterrupt):
        extract(loaded, small, target, sites=SITES, batch_size=4, progress=False)
    assert not target.exists(), "an unfinished cache must not look complete"
    with CacheReader(partial_path(target), allow_incomplete=True) as partial:
        assert partial.n_written == 8
    with pytest.raises(CacheError, match="incomplete"):
        CacheReader(partial_path(target))

    monkeypatch.setattr(extract_module, "capture_tokens", real_capture)
    resumed_calls = {"n": 0}

    def counting(*args, **kwargs):
        resumed_calls["n"] += 1
        return real_capture(*args, **kwargs)

    monkeypatch.setattr(extract_module, "capture_tokens", counting)
    extract(loaded, small, target, sites=SITES, batch_size=4, progress=False)
    assert resumed_calls["n"] == 3, "only the last batch is recomputed"
    assert not partial_path(target).exists()
    with CacheReader(target) as a, CacheReader(clean) as b:
        for condition in a.conditions:
            for site in SITES:
                np.testing.assert_array_equal(
                    a.acts(site, condition)[()], b.acts(site, condition)[()]
                )


def test_incompatible_unfinished_cache_is_refused(loaded, small, tmp_path) -> None:
    target = tmp_path / "cache.h5"
    with h5py.File(partial_path(target), "w") as f:
        f.attrs.update(
            {
                "schema_version": SCHEMA_VERSION,
                "toolkit_version": extract_module.toolkit_version(),
                "model": "another/model",
            }
        )
    with pytest.raises(CacheError, match="different 'model'.*delete it"):
        extract(loaded, small, target, sites=SITES, progress=False)
    assert partial_path(target).exists(), "never deletes data on its own"


def test_existing_cache_is_reused_or_needs_overwrite(
    cache_path, loaded, small, tmp_path, monkeypatch
) -> None:
    target = tmp_path / "cache.h5"
    shutil.copy(cache_path, target)
    before = target.read_bytes()

    def no_capture(*args, **kwargs):
        raise AssertionError("a finished cache of the same settings is reused, not redone")

    with monkeypatch.context() as patched:
        patched.setattr(extract_module, "capture_tokens", no_capture)
        assert extract(loaded, small, target, sites=SITES, progress=False) == target
    assert target.read_bytes() == before
    with pytest.raises(OutputExistsError, match="different 'sites'.*overwrite=True"):
        extract(loaded, small, target, sites=["lm.0"], progress=False)
    assert target.read_bytes() == before
    extract(loaded, small, target, sites=["lm.0"], overwrite=True, progress=False)
    with CacheReader(target) as reader:
        assert reader.sites == ["lm.0"]


def test_reader_errors_say_what_to_do(cache_path, tmp_path) -> None:
    with pytest.raises(CacheError, match="no cache at .*pass the file an extraction wrote"):
        CacheReader(tmp_path / "missing.h5")
    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(b"\x89HDF\r\n\x1a\n" + b"garbage" * 100)
    with pytest.raises(CacheError, match="not a readable HDF5 file"):
        CacheReader(corrupt)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(cache_path.read_bytes()[:5000])
    with pytest.raises(CacheError, match="truncated or corrupt"):
        CacheReader(truncated)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = 1
    with pytest.raises(CacheError, match="not an activation cache"):
        CacheReader(other)
    newer = tmp_path / "newer.h5"
    shutil.copy(cache_path, newer)
    with h5py.File(newer, "a") as f:
        f.attrs["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(CacheError, match="upgrade"):
        CacheReader(newer)
    older = tmp_path / "schema3.h5"  # no images/size: every image is its whole row
    shutil.copy(cache_path, older)
    with h5py.File(older, "a") as f:
        f.attrs["schema_version"] = 3
        del f["images/size"]
        n, height, width = f["images/object_map"].shape
    with CacheReader(older) as reader:
        assert reader.image_sizes.tolist() == [[height, width]] * n
    with h5py.File(older, "a") as f:  # schema 4: one side per square image
        f.attrs["schema_version"] = 4
        f["images/size"] = np.full(n, 40, dtype=np.int32)
    with CacheReader(older) as reader:
        assert reader.image_sizes.tolist() == [[40, 40]] * n
    with CacheReader(cache_path) as reader:
        with pytest.raises(SiteError, match="sites: vision.0, projector, lm.3"):
            reader.acts("lm.5")
        with pytest.raises(CacheError, match="no condition"):
            reader.acts("lm.3", "dropout")


def test_bad_extraction_settings(loaded, small, tmp_path) -> None:
    with pytest.raises(SiteError, match="valid sites"):
        extract(loaded, small, tmp_path / "c.h5", sites=["lm.42"], progress=False)
    assert not (tmp_path / "c.h5").exists() and not partial_path(tmp_path / "c.h5").exists()


@pytest.mark.skipif(shutil.which("h5ls") is None, reason="HDF5 command-line tools not installed")
def test_standard_hdf5_tools_read_it(cache_path) -> None:
    listing = subprocess.run(
        ["h5ls", "-r", str(cache_path)], capture_output=True, text=True, check=True
    ).stdout
    for name in ("/acts/vision.0", "/images/pixels", "/labels/color", "/layout/vision.0/boxes"):
        assert name in listing
    dump = subprocess.run(
        ["h5dump", "-a", "/prompt", str(cache_path)], capture_output=True, text=True, check=True
    ).stdout
    assert "USER:" in dump


@pytest.mark.parametrize("compression", ["lzf", "gzip"])
def test_compressed_caches_read_back_the_same_values(
    cache_path, loaded, small, tmp_path, compression, caplog
) -> None:
    """Compressed activation datasets (h5py's filters) read back bit for bit as the
    uncompressed cache's; the expected size is said before writing; a cache of another
    compression is another cache."""
    import logging

    path = tmp_path / f"{compression}.h5"
    with caplog.at_level(logging.INFO, logger="interp"):
        extract(loaded, small, path, sites=SITES, batch_size=4, progress=False,
                compression=compression)  # fmt: skip
    assert any("take about" in r.getMessage() for r in caplog.records)
    with h5py.File(path) as compressed, h5py.File(cache_path) as plain:
        assert compressed.attrs["compression"] == compression
        for site in SITES:
            assert compressed[f"acts/{site}"].compression == compression
            assert plain[f"acts/{site}"].compression is None
            np.testing.assert_array_equal(compressed[f"acts/{site}"][:], plain[f"acts/{site}"][:])
    with pytest.raises(OutputExistsError, match="different 'compression'"):
        extract(loaded, small, path, sites=SITES, batch_size=4, progress=False)
    with pytest.raises(ConfigError, match="compression must be one of"):
        extract(loaded, small, tmp_path / "x.h5", sites=SITES, compression="zstd")


def test_a_cache_from_before_compression_is_reused(loaded, small, tmp_path) -> None:
    """A finished cache whose file predates the compression setting reads as
    uncompressed: the same extraction reuses it instead of refusing it."""
    path = extract(loaded, small, tmp_path / "old.h5", sites=SITES, progress=False)
    with h5py.File(path, "a") as handle:
        del handle.attrs["compression"]
    before = path.stat().st_mtime_ns
    assert extract(loaded, small, path, sites=SITES, progress=False) == path
    assert path.stat().st_mtime_ns == before


def test_an_error_in_the_background_writer_stops_the_extraction(
    loaded, small, tmp_path, monkeypatch
) -> None:
    """Batches are written by a background thread: its error is raised by extract itself,
    no thread is left behind, the file keeps every batch written before, and a rerun
    resumes from there to the same cache as an uninterrupted extraction."""
    import threading

    from caches.writer import CacheWriter

    clean = extract(loaded, small, tmp_path / "clean.h5", sites=SITES, batch_size=4, progress=False)
    real_write = CacheWriter.write_batch
    seen = {"n": 0, "threads": set()}

    def failing(self, *args, **kwargs):
        seen["n"] += 1
        seen["threads"].add(threading.current_thread().name)
        if seen["n"] == 2:
            raise RuntimeError("the disk controller said no")
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(CacheWriter, "write_batch", failing)
    target = tmp_path / "out.h5"
    with pytest.raises(RuntimeError, match="the disk controller said no"):
        extract(loaded, small, target, sites=SITES, batch_size=4, progress=False)
    assert seen["threads"] == {"cache-writer"}  # written off the caller's thread
    assert not [t for t in threading.enumerate() if t.name == "cache-writer"]
    with CacheReader(partial_path(target), allow_incomplete=True) as partial:
        assert partial.n_written == 4
    monkeypatch.setattr(CacheWriter, "write_batch", real_write)
    extract(loaded, small, target, sites=SITES, batch_size=4, progress=False)
    with CacheReader(target) as a, CacheReader(clean) as b:
        for site in SITES:
            np.testing.assert_array_equal(a.acts(site)[()], b.acts(site)[()])


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_models_store_their_own_values(tiny_dir, small, prompt, tmp_path, dtype):
    """A float16 or bfloat16 model's activations reach the file as they were (no float32
    detour, nothing rounded): equal to plain forward hooks on a fresh copy in that dtype.
    bfloat16, which HDF5 lacks, lies in the file as its raw bits and reads as float32."""
    half = load_model(tiny_dir, dtype=dtype)
    path = extract(
        half, small, tmp_path / "c.h5", sites=SITES, conditions="baseline", batch_size=10,
        progress=False,
    )  # fmt: skip
    inputs = half.adapter.build_inputs(small.images, prompt)
    paths = {site: half.adapter.module_path(site) for site in SITES}
    _, seen = hooked_forward(tiny_dir, inputs, paths, dtype=getattr(torch, dtype))
    image = inputs["input_ids"] == half.model.config.image_token_id  # (batch, seq)
    expected = {
        "vision.0": seen["vision.0"][:, 1:],  # after the CLS token
        "projector": seen["projector"],
        "lm.3": seen["lm.3"][image].reshape(len(small), -1, seen["lm.3"].shape[-1]),
    }
    with h5py.File(path, "r") as f:
        raw = f["acts/lm.3"]
        if dtype == "bfloat16":
            assert raw.dtype == np.uint16 and raw.attrs["encoding"] == "bfloat16"
        else:
            assert raw.dtype == np.float16 and "encoding" not in raw.attrs
        assert f.attrs["store_dtype"] == dtype
    with CacheReader(path) as reader:
        for site in SITES:
            stored = reader.acts(site)[()]
            assert stored.dtype == (np.float32 if dtype == "bfloat16" else np.float16)
            np.testing.assert_array_equal(stored, expected[site].float().numpy())
            np.testing.assert_array_equal(reader.site_array(site), stored.astype(np.float32))
            assert reader.acts(site)[2:4].shape == (2, *stored.shape[1:])
