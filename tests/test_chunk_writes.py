"""The fast write path (whole chunks handed to HDF5, :mod:`caches.chunks`) writes the same
cache as the plain one (h5py slice assignment), dataset by dataset and bit for bit:
dense and ragged sites, every storage dtype, compressed or not, batches of uneven sizes
whose rows start and end inside chunks, across a resume; and the fast finiteness check
agrees with numpy's."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from references import assert_same_cache

import caches.writer as writer_module
from caches import CacheReader, extract
from caches.finite import any_nonfinite
from caches.writer import CacheWriter
from interp import CacheError, StimulusSpec, generate
from interp.layout import TokenLayout

SIDES = [3, 1, 4, 2, 4, 1, 1, 3, 2, 4, 3]  # a ragged site: 9, 1, 16, 4, ... tokens per image
BATCHES = [(0, 3), (3, 4), (4, 8), (8, 11)]  # uneven, starting and ending inside chunks
D = 5


def _values(n_tokens: int, seed: int, dtype: torch.dtype) -> torch.Tensor:
    values = torch.randn(n_tokens, D, generator=torch.Generator().manual_seed(seed)) * 3
    values[::7, 1] = torch.nan  # special values go through bit for bit
    values[::5, 2] = -torch.inf
    return values.to(dtype)


def _write(path: Path, store_dtype: str, compression: str, direct: bool, stop_after: int) -> None:
    """The same cache through either path; the writer closes after ``stop_after`` batches
    and a second one resumes it (as a rerun after a kill does)."""
    ragged = [TokenLayout.regular(s, s, 8) for s in SIDES]
    n = len(SIDES)
    dense = TokenLayout.regular(2, 2, 8)
    attrs = {
        "sites": ["vision.0", "lm.1"],
        "conditions": ["baseline"],
        "patch_grid": [2, 2],
        "store_dtype": store_dtype,
        "compression": compression,
    }
    torch_dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(
        store_dtype, torch.float32
    )
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    maps = rng.integers(-1, 3, (n, 8, 8)).astype(np.int8)
    for part, batches in enumerate((BATCHES[:stop_after], BATCHES[stop_after:])):
        writer = CacheWriter(path, attrs, allow_nonfinite=True)
        writer.direct_chunks = direct
        with writer:
            writer.write_static(
                (n, 8, 8, 3),
                (n, 8, 8),
                {"size": np.ones(n, np.float32)},
                {},
                {"vision.0": dense, "lm.1": ragged},
            )
            for lo, hi in batches:
                counts = [s * s for s in SIDES[lo:hi]]
                flat = _values(sum(counts), lo, torch_dtype)
                writer.write_batch(
                    lo,
                    {
                        "baseline": {
                            "vision.0": _values((hi - lo) * 4, 100 + lo, torch_dtype).reshape(
                                -1, 4, D
                            ),
                            "lm.1": list(torch.split(flat, counts)),
                        }
                    },
                    pixels=pixels[lo:hi],
                    maps=maps[lo:hi],
                )
            if part:
                writer.finalize()


@pytest.mark.parametrize("store_dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("compression", ["none", "gzip"])
@pytest.mark.parametrize("chunk_rows", [3, None])  # ragged chunks inside images, or not
def test_chunk_writes_equal_slice_writes(
    tmp_path, store_dtype, compression, chunk_rows, monkeypatch
) -> None:
    if chunk_rows:
        itemsize = 2 if store_dtype != "float32" else 4
        monkeypatch.setattr(writer_module, "RAGGED_CHUNK_BYTES", chunk_rows * D * itemsize)
    fast, plain = tmp_path / "fast.h5", tmp_path / "plain.h5"
    _write(fast, store_dtype, compression, direct=True, stop_after=2)
    _write(plain, store_dtype, compression, direct=False, stop_after=3)
    assert_same_cache(fast, plain, chunks=True)
    with h5py.File(fast) as handle:  # the values are those given, read by plain h5py
        assert handle["acts/lm.1"].chunks == (chunk_rows or max(SIDES) ** 2, D)
        counts = [s * s for s in SIDES]
        stored = handle["acts/lm.1"][()]
        assert stored.shape == (sum(counts), D)
        expected = torch.cat([_values(sum(counts[lo:hi]), lo, torch.float32) for lo, hi in BATCHES])
        if store_dtype == "bfloat16":
            expected = expected.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
        else:
            expected = expected.numpy().astype(store_dtype)
        np.testing.assert_array_equal(stored, expected)


def test_an_extraction_through_either_path_is_the_same_file(loaded, tmp_path, monkeypatch) -> None:
    """The organism's extraction (dense sites, pixels, a condition) with chunk writes and
    with slice writes: the same file."""
    stimuli = generate(StimulusSpec(n_images=6, seed=3))
    settings = dict(sites=["vision.0", "projector", "lm.2"], conditions=["baseline", "shuffle"],
                    batch_size=4, progress=False)  # fmt: skip
    fast = extract(loaded, stimuli, tmp_path / "fast.h5", **settings)
    monkeypatch.setattr(CacheWriter, "direct_chunks", False)
    plain = extract(loaded, stimuli, tmp_path / "plain.h5", **settings)
    assert_same_cache(fast, plain, chunks=True)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_the_fast_finiteness_check_agrees_with_numpy(dtype) -> None:
    rng = np.random.default_rng(1)
    values = rng.standard_normal(200_003).astype(dtype)  # several blocks and a short one
    assert not any_nonfinite(values)
    for bad in (np.nan, np.inf, -np.inf):
        for where in (0, 65_535, 65_536, 200_002):
            broken = values.copy()
            broken[where] = bad
            assert any_nonfinite(broken) == (not np.isfinite(broken).all())
    big = np.array([np.finfo(dtype).max, -np.finfo(dtype).max, 0, -0.0], dtype=dtype)
    assert not any_nonfinite(big)  # the largest finite values are finite
    bits = torch.tensor([1.0, float("inf")], dtype=torch.bfloat16).view(torch.int16).numpy()
    assert any_nonfinite(bits[:2], "bfloat16") and not any_nonfinite(bits[:1], "bfloat16")


@pytest.mark.parametrize("store_dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("compression", ["none", "gzip"])
@pytest.mark.parametrize("chunk_rows", [3, None])
def test_sites_read_back_as_plain_h5py_reads_them(
    tmp_path, store_dtype, compression, chunk_rows, monkeypatch
) -> None:
    """``site_tokens`` and ``mean_pooled`` (chunk reads straight into place, widening in
    torch) against plain h5py reads widened by numpy, across steps of any size, ragged
    chunks inside images or across them."""
    if chunk_rows:
        itemsize = 2 if store_dtype != "float32" else 4
        monkeypatch.setattr(writer_module, "RAGGED_CHUNK_BYTES", chunk_rows * D * itemsize)
    path = tmp_path / "cache.h5"
    _write(path, store_dtype, compression, direct=True, stop_after=4)
    with h5py.File(path) as handle:
        stored = {site: handle[f"acts/{site}"][()] for site in ("vision.0", "lm.1")}
        offsets = {"vision.0": np.arange(len(SIDES) + 1) * 4, "lm.1": _offsets()}
    with CacheReader(path, allow_incomplete=True) as reader:
        for site, raw in stored.items():
            if store_dtype == "bfloat16":  # the stored bits are a float32's upper half
                expected = (raw.astype(np.uint32) << 16).view(np.float32)
            else:
                expected = raw.astype(np.float32)
            expected = expected.reshape(-1, D)
            for chunk in (None, 1, 3):
                tokens = reader.site_tokens(site, chunk=chunk)
                assert tokens.values.dtype == np.float32
                np.testing.assert_array_equal(tokens.values, expected)
                np.testing.assert_array_equal(tokens.offsets, offsets[site])
                means = reader.mean_pooled(site, chunk=chunk)
                cuts = offsets[site]
                for i in range(len(SIDES)):
                    np.testing.assert_allclose(
                        means[i], expected[cuts[i] : cuts[i + 1]].mean(axis=0), rtol=1e-6
                    )
            if store_dtype == "float16":  # as stored: half the memory, the same values
                half = reader.site_tokens(site, dtype=np.float16)
                np.testing.assert_array_equal(half.values, raw.reshape(-1, D))
            else:
                with pytest.raises(CacheError, match="pass dtype=np.float32"):
                    reader.site_tokens(site, dtype=np.float16)


def _offsets() -> np.ndarray:
    return np.concatenate([[0], np.cumsum([s * s for s in SIDES])])


def test_a_later_batch_that_is_not_finite_is_refused_by_the_writer_thread(tmp_path) -> None:
    """An extraction checks every batch after the first in the writer thread: the refusal
    reaches the caller with the site, condition, count and first image, nothing of that
    batch is counted as written, and the batches before it stay for a resume."""
    from caches.background import BackgroundWriter

    layout = TokenLayout.regular(2, 2, 8)
    attrs = {"sites": ["lm.1"], "conditions": ["baseline"], "patch_grid": [2, 2]}
    bad = torch.ones(2, 4, D)
    bad[1, 2, 3] = torch.inf
    with CacheWriter(tmp_path / "c.h5", attrs) as writer:
        writer.write_static(None, (4, 8, 8), {}, {}, {"lm.1": layout})
        with pytest.raises(CacheError) as refused, BackgroundWriter(writer) as background:
            background.put(0, {"baseline": {"lm.1": torch.ones(2, 4, D)}})
            background.put(2, {"baseline": {"lm.1": bad}})
        assert writer.n_written == 2
    message = str(refused.value)
    assert "site 'lm.1' under 'baseline' gave 1 of 40 values" in message
    assert "images 2..3, first in image 3" in message


def test_a_capture_records_each_sites_value_range(loaded, prompt) -> None:
    """``capture_tokens(ranges=True)``: each recording's smallest and largest value, as
    numpy finds them in the recorded tokens."""
    from interp import capture_tokens

    images = generate(StimulusSpec(n_images=3, seed=2)).images
    captured = capture_tokens(loaded, images, ["vision.0", "lm.2"], prompt=prompt, ranges=True)
    for site in ("vision.0", "lm.2"):
        values = captured.acts[site].numpy()
        np.testing.assert_array_equal(captured.ranges[f"acts/{site}"], [values.min(), values.max()])
    extra = captured.extra["vision.0"].numpy()  # the CLS token
    np.testing.assert_array_equal(captured.ranges["extra/vision.0"], [extra.min(), extra.max()])
    assert capture_tokens(loaded, images, ["lm.2"], prompt=prompt).ranges == {}


def test_a_known_range_spares_the_pass_over_the_values(monkeypatch) -> None:
    """Within the storage dtype's finite range, the capture's value range is taken as it
    is (no pass over the values); a range that is NaN, or beyond the dtype's largest
    value, sends the values through the exact check, which refuses only what is not
    finite once stored."""

    def unread(values):
        raise AssertionError("the values were read")

    values = torch.full((2, 3, D), 65510.0)  # rounds to float16's largest, 65504
    monkeypatch.setattr(writer_module, "any_nonfinite", unread)
    stored = writer_module.storable(values.clamp(max=1.0), "float16", "lm.1", "baseline", 0,
                                    value_range=(-1.0, 1.0))  # fmt: skip
    assert stored.bad == 0 and stored.counts == [3, 3]
    monkeypatch.undo()
    stored = writer_module.storable(values, "float16", "lm.1", "baseline", 0,
                                    value_range=(65510.0, 65510.0))  # fmt: skip
    assert (stored.images[0] == 65504).all()
    values[1, 2, 0] = 70000.0  # inf once stored
    with pytest.raises(CacheError, match="1 beyond float16's range"):
        writer_module.storable(values, "float16", "lm.1", "baseline", 0,
                               value_range=(65510.0, 70000.0))  # fmt: skip
    values[1, 2, 0] = torch.nan
    with pytest.raises(CacheError, match="1 NaN"):
        writer_module.storable(values, "float16", "lm.1", "baseline", 0,
                               value_range=(torch.nan, torch.nan))  # fmt: skip
