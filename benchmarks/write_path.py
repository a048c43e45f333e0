"""The toolkit's host write path and read path at LLaVA-1.5-7B's shapes, against the raw
sequential write (and read) of the same bytes to the same folder, side by side in one
run. No model and no GPU: this is what the host does with what a capture hands it.

    python benchmarks/write_path.py [--folders /dev/shm .] [--images 16] [--batch-size 8]
        [--dtypes float16 bfloat16] [--layouts dense ragged] [--compression none]
        [--sites 57] [--repeats 3] [--read-images 128]

Writing: batches of CPU tensors as the capture hands them (576 patch tokens per image;
24 vision layers of width 1024, the projector and 32 LM layers of width 4096, in the
model's dtype; ``ragged``: images of 441 to 576 tokens, stored as flat tokens), into a
file in each folder, by

- ``raw``: ``ndarray.tofile`` of the same bytes, one sequential file (the limit);
- ``h5py``: plain h5py slice assignment into datasets of the cache's chunk shapes;
- ``toolkit``: the extraction's host path for values from a GPU: ``storable``
  (conversion to the storage dtype; finite as the capture's value ranges, reduced on
  the device, say: here made before the timing) in this thread, ``CacheWriter.
  write_batch`` in the background writer thread, then ``finalize`` (layouts, flushes,
  the rename included);
- ``toolkit_host_check``: the same without value ranges: ``storable`` reads every value
  to check it is finite (what a CPU capture hands over: its ranges cost that same pass);
- ``toolkit_slices``: as ``toolkit`` with ``CacheWriter.direct_chunks = False`` (h5py
  slice assignment instead of whole-chunk writes: the path before whole-chunk writes).

Reading one LM site of a ``--read-images`` cache: ``raw`` (``numpy.fromfile`` of the
same bytes, one sequential file), ``h5py`` (``dataset[()]``), ``site_tokens`` (float32,
for probes), ``site_tokens_f16`` (as stored), ``mean_pooled``. On a folder that is not
a tmpfs, each read starts with the files dropped from the page cache (cold).

Every write ends with the file's ``fsync`` (a no-op on a tmpfs): on a disk, the figure
is the disk's, not the page cache's. Prints GB/s (10^9 bytes of stored activations per
second) and each method's ratio to ``raw``: the median of interleaved repetitions, and
the best of them (the file system's own pauses, e.g. a tmpfs finding free pages, vary
from run to run). Run by hand; not part of the tests.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import h5py
import numpy as np
import torch

from caches import CacheReader
from caches.background import BackgroundWriter
from caches.schema import human_bytes
from caches.writer import CacheWriter, storable
from interp.layout import TokenLayout

TOKENS, GRID = 576, 24  # LLaVA-1.5-7B: 24 x 24 patches of 14 px at 336 px
VISION_WIDTH, LM_WIDTH = 1024, 4096
SITES = (
    [(f"vision.{i}", VISION_WIDTH) for i in range(24)]
    + [("projector", LM_WIDTH)]
    + [(f"lm.{i}", LM_WIDTH) for i in range(32)]
)
TORCH = {"float16": torch.float16, "bfloat16": torch.bfloat16}


class Case:
    """One run's data: per batch, per site, the values the capture hands over. Batches of
    the same token counts share their values, two sets in turn (as many as the pipeline
    holds at once), so the data in memory stay small however many images are written."""

    def __init__(self, args: argparse.Namespace, dtype: str, layout: str) -> None:
        self.n, self.batch = args.images, args.batch_size
        self.n_batches = -(-self.n // self.batch)
        self.sites = SITES[: args.sites]
        self.dtype, self.layout = dtype, layout
        self.generator = torch.Generator().manual_seed(0)
        # ragged: grids of 21 to 24 sides (441 to 576 tokens)
        ragged = [21 + (i * 7) % 4 for i in range(self.n)]
        sides = ragged if layout == "ragged" else [GRID] * self.n
        self.counts = [s * s for s in sides]
        self.layouts = [TokenLayout.regular(s, s, 336) for s in sides]
        self._made: dict[tuple, dict[int, list[torch.Tensor]]] = {}
        rows = sum(self.counts)
        self.nbytes = sum(rows * width * 2 for _, width in self.sites)  # stored bytes

    def _counts(self, k: int) -> list[int]:
        return self.counts[k * self.batch : (k + 1) * self.batch]

    def images(self, k: int) -> dict[int, list[torch.Tensor]]:
        """Batch ``k``'s values: per width, one ``(tokens_i, width)`` tensor of its own per
        image (as forward passes of each size give them)."""
        counts = self._counts(k)
        key = (tuple(counts), k % 2)
        if key not in self._made:
            self._made[key] = {
                width: [
                    torch.randn(c, width, generator=self.generator).to(TORCH[self.dtype])
                    for c in counts
                ]
                for width in {w for _, w in self.sites}
            }
        return self._made[key]

    def flat(self, k: int, width: int) -> torch.Tensor:
        """Batch ``k``'s values of ``width`` as one ``(rows, width)`` tensor (a dense
        site's ``(batch, tokens, width)``, flat), made once."""
        key = ("flat", tuple(self._counts(k)), k % 2, width)
        if key not in self._made:
            self._made[key] = torch.cat(self.images(k)[width])
        return self._made[key]

    def value_range(self, k: int, width: int) -> torch.Tensor:
        """Batch ``k``'s smallest and largest value at ``width``: what a GPU capture hands
        over beside the values (``Captured.ranges``, reduced on the device), made once."""
        key = ("range", tuple(self._counts(k)), k % 2, width)
        if key not in self._made:
            low, high = self.flat(k, width).aminmax()
            self._made[key] = torch.stack([low, high]).float()
        return self._made[key]

    def handed(self, k: int) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """Batch ``k`` as the capture hands it: ``(batch, tokens, d)`` or one ``(tokens_i,
        d)`` per image."""
        counts = self._counts(k)
        out = {}
        for site, width in self.sites:
            if self.layout == "dense":
                out[site] = self.flat(k, width).view(len(counts), TOKENS, width)
            else:
                out[site] = self.images(k)[width]
        return out


def _settle(path: Path) -> None:
    """Wait until ``path``'s bytes are on the storage (a no-op on a tmpfs), then delete
    it: a disk's figure is the disk's, not the page cache's."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    path.unlink()


def _raw(case: Case, folder: Path) -> None:
    path = folder / "raw.bin"
    with open(path, "wb") as handle:
        for k in range(case.n_batches):
            for _, width in case.sites:
                case.flat(k, width).view(torch.int16).numpy().tofile(handle)
    _settle(path)


def _h5py(case: Case, folder: Path, compression: str) -> None:
    path = folder / "plain.h5"
    filters = {
        "none": {},
        "gzip": {"compression": "gzip", "compression_opts": 1, "shuffle": True},
        "lzf": {"compression": "lzf", "shuffle": True},
    }
    offsets = np.concatenate([[0], np.cumsum(case.counts)])
    with h5py.File(path, "w") as handle:
        datasets = {}
        for site, width in case.sites:
            if case.layout == "dense":
                shape, chunks = (case.n, TOKENS, width), (1, TOKENS, width)
            else:
                shape, chunks = (int(offsets[-1]), width), (max(case.counts), width)
            datasets[site] = handle.create_dataset(
                site, shape=shape, dtype=np.uint16, chunks=chunks, **filters[compression]
            )
        for k in range(case.n_batches):
            start = k * case.batch
            stop = min(case.n, start + case.batch)
            for site, width in case.sites:
                raw = case.flat(k, width).view(torch.int16).numpy().view(np.uint16)
                if case.layout == "dense":
                    datasets[site][start:stop] = raw.reshape(stop - start, TOKENS, width)
                else:
                    datasets[site][offsets[start] : offsets[stop]] = raw
    _settle(path)


def _toolkit(
    case: Case, folder: Path, compression: str, direct: bool = True, ranges: bool = True
) -> None:
    path = folder / "cache.h5"
    attrs = {
        "sites": [s for s, _ in case.sites],
        "conditions": ["baseline"],
        "patch_grid": [GRID, GRID],
        "store_dtype": case.dtype,
        "compression": compression,
    }
    writer = CacheWriter(path, attrs, overwrite=True)
    writer.direct_chunks = direct
    with writer:
        layout = case.layouts if case.layout == "ragged" else case.layouts[0]
        writer.write_static(None, (case.n, 1, 1), {}, {}, {site: layout for site, _ in case.sites})
        with BackgroundWriter(writer) as background:
            for k in range(case.n_batches):
                start = k * case.batch
                acts = {
                    site: storable(
                        values,
                        case.dtype,
                        site,
                        "baseline",
                        start,
                        value_range=case.value_range(k, width) if ranges else None,
                    )
                    for (site, values), (_, width) in zip(
                        case.handed(k).items(), case.sites, strict=True
                    )
                }
                background.put(start, {"baseline": acts})
        writer.finalize()
    _settle(path)


def _timed(run: Callable[[], None]) -> float:
    begin = time.perf_counter()
    run()
    return time.perf_counter() - begin


def _report(title: str, nbytes: int, times: dict[str, list[float]]) -> None:
    raw = statistics.median(times["raw"])
    print(f"\n{title}: {human_bytes(nbytes)} per run")
    best = min(times["raw"])
    print(f"  {'method':18s} {'GB/s':>7s} {'x raw':>7s}   {'best GB/s':>9s} {'x raw':>7s}")
    for method, found in times.items():
        seconds, fastest = statistics.median(found), min(found)
        print(
            f"  {method:18s} {nbytes / seconds / 1e9:7.2f} {raw / seconds:7.2f}   "
            f"{nbytes / fastest / 1e9:9.2f} {best / fastest:7.2f}"
        )


def write_side(args: argparse.Namespace, folder: Path) -> None:
    for dtype in args.dtypes:
        for layout in args.layouts:
            case = Case(args, dtype, layout)
            for compression in args.compression:
                methods: dict[str, Callable[[], None]] = {
                    "raw": partial(_raw, case, folder),
                    "h5py": partial(_h5py, case, folder, compression),
                    "toolkit": partial(_toolkit, case, folder, compression),
                    "toolkit_host_check": partial(
                        _toolkit, case, folder, compression, ranges=False
                    ),
                    "toolkit_slices": partial(_toolkit, case, folder, compression, False),
                }
                for k in range(case.n_batches):  # made on the device, before: not timed
                    for _, width in case.sites:
                        case.value_range(k, width)
                if compression != "none":
                    del methods["toolkit_slices"]  # the same path: filters need slices
                times: dict[str, list[float]] = {m: [] for m in methods}
                for _ in range(args.repeats):
                    for method, run in methods.items():
                        times[method].append(_timed(run))
                title = (
                    f"write {folder} {dtype} {layout} compression={compression}, "
                    f"{len(case.sites)} sites x {case.n} images, batches of {case.batch}"
                )
                _report(title, case.nbytes, times)


def _drop(*paths: Path) -> None:
    """Drop files from the page cache (their pages are clean: written and synced)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def read_side(args: argparse.Namespace, folder: Path) -> None:
    site, width = "lm.15", LM_WIDTH
    cold = not _tmpfs(folder)
    for layout in args.layouts:
        settings = argparse.Namespace(**{**vars(args), "images": args.read_images, "sites": 57})
        case = Case(settings, "float16", layout)
        case.sites = [("vision.11", VISION_WIDTH), (site, width), ("lm.16", width)]
        path = folder / "read.h5"
        attrs = {"sites": [s for s, _ in case.sites], "conditions": ["baseline"],
                 "patch_grid": [GRID, GRID], "store_dtype": "float16", "pixels": False}  # fmt: skip
        with CacheWriter(path, attrs, overwrite=True) as writer:
            layouts = case.layouts if layout == "ragged" else case.layouts[0]
            sizes = np.ones(case.n, np.float32)
            writer.write_static(None, (case.n, 1, 1), {"size": sizes}, {},
                                {s: layouts for s, _ in case.sites})  # fmt: skip
            for k in range(case.n_batches):
                writer.write_batch(k * case.batch, {"baseline": case.handed(k)})
            writer.finalize()
        raw = folder / "read.bin"
        with open(raw, "wb") as handle:
            for k in range(case.n_batches):
                case.flat(k, width).view(torch.int16).numpy().tofile(handle)
        nbytes = raw.stat().st_size

        methods: dict[str, Callable[[], object]] = {
            "raw": partial(np.fromfile, raw, dtype=np.float16),
            "h5py": partial(_read, path, lambda r: r._file[f"acts/{site}"][()]),
            "site_tokens": partial(_read, path, lambda r: r.site_tokens(site)),
            "site_tokens_f16": partial(
                _read, path, lambda r: r.site_tokens(site, dtype=np.float16)
            ),
            "mean_pooled": partial(_read, path, lambda r: r.mean_pooled(site)),
        }
        times: dict[str, list[float]] = {m: [] for m in methods}
        for _ in range(args.repeats):
            for method, run in methods.items():
                if cold:
                    _drop(path, raw)
                times[method].append(_timed(run))
        _report(
            f"read {folder} {layout} site {site} of {case.n} images (float16)"
            + (", cold" if cold else ", tmpfs"),
            nbytes,
            times,
        )
        path.unlink()
        raw.unlink()


def _read(path: Path, method: Callable[[CacheReader], object]) -> None:
    with CacheReader(path) as reader:
        method(reader)


def _tmpfs(folder: Path) -> bool:
    """Whether ``folder`` is on a tmpfs (memory)."""
    best, kind = "", ""
    with open("/proc/mounts") as mounts:
        for line in mounts:
            _, point, fs = line.split()[:3]
            inside = str(folder.resolve()).startswith(point.rstrip("/") + "/")
            if (inside or str(folder.resolve()) == point) and len(point) > len(best):
                best, kind = point, fs
    return kind == "tmpfs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folders", nargs="+", default=["/dev/shm", "."],
                        help="where to write (a temporary folder is made in each)")  # fmt: skip
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--sites", type=int, default=len(SITES), help="the first N sites")
    parser.add_argument("--dtypes", nargs="+", default=["float16", "bfloat16"],
                        choices=sorted(TORCH))  # fmt: skip
    parser.add_argument("--layouts", nargs="+", default=["dense", "ragged"],
                        choices=["dense", "ragged"])  # fmt: skip
    parser.add_argument("--compression", nargs="+", default=["none"],
                        choices=["none", "lzf", "gzip"])  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--read-images", type=int, default=128)
    parser.add_argument("--no-read", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(len(os.sched_getaffinity(0)))  # under taskset: its CPUs only
    print(f"torch {torch.__version__}, h5py {h5py.__version__} (HDF5 "
          f"{h5py.version.hdf5_version}), {len(os.sched_getaffinity(0))} of "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    for name in args.folders:
        with tempfile.TemporaryDirectory(dir=name, prefix="write-path-") as tmp:
            folder = Path(tmp)
            print(f"\n== {name} ({'tmpfs' if _tmpfs(folder) else 'disk'})")
            if not args.no_write:
                write_side(args, folder)
            if not args.no_read:
                read_side(args, folder)


if __name__ == "__main__":
    main()
