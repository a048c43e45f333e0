"""Data-parallel extraction: torchrun ranks on the CPU (gloo), each writing its own rank
file, published as one cache of virtual datasets equal to a single process's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from caches import CacheReader
from caches.parts import consolidate, part_path
from interp import CacheError, ConfigError
from interp.ranks import Part

# torchrun's ranks and their files are the same on every transformers version: make test's
# second run (4.57) leaves them out.
pytestmark = pytest.mark.once

ROOT = Path(__file__).resolve().parents[1]
# A rank's script: the organism on mixed-size stimuli (every site ragged); rank 1 kills
# itself (SIGKILL) when asked for image 14's pixels, once (the marker file says so).
SCRIPT = """
import logging, os, signal, sys
from pathlib import Path
from caches import extract
from interp import StimulusSpec, generate, load_model

out, marker = sys.argv[1], Path(sys.argv[2])
data = generate(StimulusSpec(n_images=16, image_sizes=(48, 64), seed=5))
decode = data.pixels

def pixels(indices):
    if os.environ["RANK"] == "1" and 14 in indices and not marker.exists():
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return decode(indices)

data.pixels = pixels
logging.basicConfig(level=logging.INFO)
extract(load_model("organism"), data, out, batch_size=2, progress=False)
"""


def _datasets(path: Path) -> dict[str, h5py.Dataset]:
    found: list[str] = []
    with h5py.File(path, "r") as handle:
        handle.visititems(lambda n, o: found.append(n) if isinstance(o, h5py.Dataset) else None)
        return {name: (handle[name][()], dict(handle[name].attrs)) for name in found}


def assert_same_cache(published: Path, alone: Path, parts: bool = True) -> None:
    """Dataset by dataset, bit for bit, with the same attributes (root ones too, but the
    rank files' list, which ``published`` has if ``parts``)."""
    ours, theirs = _datasets(published), _datasets(alone)
    assert sorted(ours) == sorted(theirs)
    for name, (values, attrs) in theirs.items():
        got, got_attrs = ours[name]
        assert got.dtype == values.dtype and got.shape == values.shape, name
        assert got.tobytes() == values.tobytes(), f"{name} differs"
        assert {k: str(v) for k, v in got_attrs.items()} == {k: str(v) for k, v in attrs.items()}, (
            name
        )
    with h5py.File(published, "r") as a, h5py.File(alone, "r") as b:
        assert ("parts" in a.attrs) == parts
        assert {k: str(v) for k, v in a.attrs.items() if k != "parts"} == {
            k: str(v) for k, v in b.attrs.items()
        }


def _torchrun(args: list[str], cwd: Path, ranks: int = 2) -> subprocess.CompletedProcess:
    """``args`` under torchrun with ``ranks`` processes of one thread each (a single
    process, ``ranks=1``, is the reference: one thread too, since a reduction's order and
    so its last bit can follow the thread count)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks)]
    command += ["--master-port", str(29500 + os.getpid() % 1000)]
    return subprocess.run(
        command + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_parts_are_whole_batches_in_order() -> None:
    """Rank r of R gets batches [B r / R, B (r + 1) / R) of the B batches."""
    spans = [Part(r, 3).images(21, 4) for r in range(3)]  # 6 batches: 2 each
    assert spans == [(0, 8), (8, 16), (16, 21)]
    assert [Part(r, 4).images(5, 4) for r in range(4)] == [(0, 0), (0, 4), (4, 4), (4, 5)]
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}
    assert Part.from_env(env) == Part(1, 2, 1, 2) and Part.from_env(env).device() == "cuda:1"
    two_nodes = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4"}
    assert Part.from_env(two_nodes).gpus(8) == [2, 3]  # 8 GPUs, 4 ranks: 2 each
    assert Part(0, 3, 2, 3).gpus(8) == [4, 5]  # two GPUs each, the 8th unused
    with pytest.raises(ConfigError, match="at most 2 ranks per machine"):
        Part(0, 4, 0, 4).gpus(2)
    assert Part.from_env({}) == Part(0, 1)
    with pytest.raises(ConfigError, match="rank must lie in 0..ranks-1"):
        Part(2, 2)
    with pytest.raises(ConfigError, match="RANK is not a number"):
        Part.from_env({"WORLD_SIZE": "2", "RANK": "x"})
    assert part_path("out/cache.h5", 3) == Path("out/cache.rank3.h5")


def test_torchrun_cache_equals_one_process(tmp_path) -> None:
    """`torchrun --nproc-per-node 2 -m interp extract`: two gloo ranks write a rank file
    each, and the published cache equals one process's, dataset by dataset, bit for bit;
    every reader reads it, and refuses it once a rank file is gone."""
    done = _torchrun(
        ["-m", "interp", "extract", "--n-images", "10", "--batch-size", "4", "--out",
         "dp/cache.h5", "--no-progress"],
        tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    published = tmp_path / "dp" / "cache.h5"
    single = _torchrun(
        ["-m", "interp", "extract", "--n-images", "10", "--batch-size", "4", "--out",
         "one/cache.h5", "--no-progress"],
        tmp_path,
        ranks=1,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr[-3000:]
    alone = tmp_path / "one" / "cache.h5"
    with h5py.File(alone, "r") as handle:
        assert "parts" not in handle.attrs  # one rank: an ordinary cache
    assert_same_cache(published, alone)
    with h5py.File(published, "r") as handle:
        assert handle["acts/lm.2"].is_virtual and handle["labels/color"].is_virtual
        assert not handle["layout/lm.2/boxes"].is_virtual  # alike in every rank: copied
        parts = json.loads(handle.attrs["parts"])
    assert [{k: p[k] for k in ("file", "start", "stop")} for p in parts] == [
        {"file": "cache.rank0.h5", "start": 0, "stop": 4},  # 3 batches of 4: rank 0 gets 1,
        {"file": "cache.rank1.h5", "start": 4, "stop": 10},  # rank 1 gets 2
    ]
    assert parts[0]["settings"] != parts[1]["settings"]  # each rank file's own digest
    moved = tmp_path / "moved"
    (tmp_path / "dp").rename(moved)  # the cache and its rank files, moved together
    with CacheReader(moved / "cache.h5") as reader, CacheReader(alone) as single:
        np.testing.assert_array_equal(reader.site_array("lm.2"), single.site_array("lm.2"))
    single_file = consolidate(moved / "cache.h5", tmp_path / "single.h5")
    (moved / "cache.rank1.h5").unlink()
    assert_same_cache(single_file, alone, parts=False)  # self-contained: no rank file read
    with pytest.raises(CacheError, match=r"images 4..9 lie in .*cache.rank1.h5, which is missing"):
        CacheReader(moved / "cache.h5")


def test_a_killed_rank_resumes_and_ragged_sites_are_rebased(tmp_path) -> None:
    """Rank 1 is killed (SIGKILL) mid-way: torchrun ends the job, its unfinished rank file
    stays; run again, rank 0 reuses its finished file, rank 1 resumes where it stopped,
    and the cache (every site ragged: images of two sizes, offsets rebased over the rank
    files) equals one process's bit for bit."""
    script = tmp_path / "rank.py"
    script.write_text(textwrap.dedent(SCRIPT))
    out, marker = tmp_path / "dp" / "cache.h5", tmp_path / "killed"
    killed = _torchrun([str(script), str(out), str(marker)], tmp_path)
    assert killed.returncode != 0 and marker.exists(), killed.stderr[-3000:]
    assert not out.exists()
    with h5py.File(str(part_path(out, 1)) + ".partial", "r") as unfinished:
        written = int(unfinished.attrs["n_written"])
    assert 2 <= written < 8, "rank 1 (images 8..15) was killed after a batch or more"
    first_rank = part_path(out, 0)
    finished_before = first_rank.stat().st_mtime_ns if first_rank.exists() else None

    resumed = _torchrun([str(script), str(out), str(marker)], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming the unfinished cache.rank1.h5.partial at image {8 + written}" in (
        resumed.stderr
    )
    if finished_before is not None:  # rank 0 had finished: its file is reused as it is
        assert first_rank.stat().st_mtime_ns == finished_before
    alone = tmp_path / "one.h5"  # one rank, one thread: the reference
    assert _torchrun([str(script), str(alone), str(marker)], tmp_path, ranks=1).returncode == 0
    assert_same_cache(out, alone)
    with CacheReader(out) as reader, CacheReader(alone) as single:
        assert reader.is_ragged("lm.2")
        np.testing.assert_array_equal(reader.offsets("lm.2"), single.offsets("lm.2"))
        tokens, expected = reader.site_tokens("lm.2"), single.site_tokens("lm.2")
        np.testing.assert_array_equal(tokens.values, expected.values)


def test_a_rank_waiting_at_the_barrier_gives_up_once_its_launcher_is_gone(monkeypatch) -> None:
    from interp import ranks

    class Pending:  # a barrier the other ranks never reach
        def is_completed(self) -> bool:
            return False

        def wait(self) -> None:
            raise AssertionError("never completes")

    parents = iter([4242, 4242, 4242, 1])  # the launcher dies: reparented to init
    monkeypatch.setattr(ranks.os, "getppid", lambda: next(parents))
    with pytest.raises(CacheError, match="rank 1: the torchrun launcher ended.*rerun the same"):
        ranks.wait_for(Pending(), 1, poll=0.0)

    class Done:
        waited = False

        def is_completed(self) -> bool:
            return True

        def wait(self) -> None:
            self.waited = True

    done = Done()
    monkeypatch.setattr(ranks.os, "getppid", lambda: 4242)
    ranks.wait_for(done, 0, poll=0.0)
    assert done.waited


def test_one_process_over_an_unfinished_parallel_run_is_refused(loaded, tmp_path) -> None:
    from caches import extract
    from interp import OutputExistsError, StimulusSpec, generate

    out = tmp_path / "cache.h5"
    stale = [tmp_path / "cache.rank0.h5", tmp_path / "cache.rank1.h5.partial"]
    for path in stale:
        path.write_bytes(b"")
    data = generate(StimulusSpec(n_images=2, seed=0))
    with pytest.raises(OutputExistsError, match=r"rank files of an unfinished data-parallel"):
        extract(loaded, data, out, sites="lm.0", conditions="baseline", progress=False)
    assert not out.exists() and all(p.exists() for p in stale)
    extract(loaded, data, out, sites="lm.0", conditions="baseline", progress=False, overwrite=True)
    assert out.is_file() and not any(p.exists() for p in stale)
