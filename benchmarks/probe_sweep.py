"""Batched torch probes vs a plain scikit-learn loop: the same sweep, side by side.

    python benchmarks/probe_sweep.py [--n-images 256] [--cache PATH] [--selections ...]
        [--torch float32-stacked float64-separate ...] [--sklearn-tol 1e-4 1e-6]

Builds a cache of the built-in organism (or reads ``--cache``), runs the same probe sweep
(same folds, inner cross-validation, penalties, selections) with the batched solver
(``probes.torch_backend``, on the GPU when present; each ``--torch`` variant: float32 or
float64 at tol 1e-6, every selection of a site in one solver call or one call each) and
with one scikit-learn ``LogisticRegression`` per problem (``probes.sklearn_backend``, at
each ``--sklearn-tol``), and prints every time, each ratio and the largest accuracy
difference. Then it measures the peak memory of a one-site sweep against that site's
array. Run by hand; not part of the tests.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from caches import CacheReader, extract
from interp import StimulusSpec, generate, load_model
from probes import ProbeSettings, sklearn_backend, sweep, torch_backend
from probes.solver import default_device

KEYS = ["site", "attribute", "selection", "condition"]


def _rss_peak_kib() -> int:
    """Peak resident memory of this process since the last reset (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _rss_now_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def _warm_up() -> None:
    """One small fit, untimed: CUDA's context and kernels load on first use."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 8)).astype(np.float32)
    y = rng.integers(0, 3, size=(4, 64))
    for dtype in (torch.float32, torch.float64):
        torch_backend(dtype=dtype)(X, y, np.ones_like(y, dtype=bool), np.ones(4), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="organism")
    parser.add_argument("--cache", help="an existing cache (default: build one)")
    parser.add_argument("--n-images", type=int, default=256)
    parser.add_argument("--sites", nargs="+", default=["vision.0", "projector", "lm.3"])
    parser.add_argument(
        "--selections",
        nargs="+",
        default=["mean", "on_object", "off_object", "random_1", "random_8", "token"],
    )
    parser.add_argument(
        "--tokens-per-image",
        type=int,
        default=ProbeSettings.tokens_per_image,
        help="cap of the `token` selection (0: every object token)",
    )
    parser.add_argument(
        "--torch",
        nargs="+",
        choices=[f"{d}-{m}" for d in ("float32", "float64") for m in ("stacked", "separate")],
        help="torch variants to time (default: the package's own on this device: float64 "
        "stacked on a GPU, float32 separate on a CPU)",
    )
    parser.add_argument(
        "--sklearn-tol",
        type=float,
        nargs="+",
        default=[1e-4],
        help="scikit-learn tol(s) to time (its default 1e-4)",
    )
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, probes on "
          f"{default_device()}")  # fmt: skip

    if args.cache:
        path = Path(args.cache)
    else:
        loaded = load_model(args.model)
        size = loaded.adapter.native_image_size
        stimuli = generate(StimulusSpec(n_images=args.n_images, image_size=size, seed=0))
        path = Path(tempfile.mkdtemp()) / "cache.h5"
        extract(loaded, stimuli, path, sites=args.sites, conditions=["baseline"], progress=False)

    settings = {"n_boot": 200, "tokens_per_image": args.tokens_per_image or None}
    with CacheReader(path) as reader:
        common = {"selections": args.selections, "progress": False, "conditions": ["baseline"]}
        print(f"cache {path}: {reader.n_written} images, sites {reader.sites}, "
              f"selections {args.selections}, "
              f"tokens per image {args.tokens_per_image or 'all'}")  # fmt: skip
        _warm_up()
        variants = args.torch or [  # the package's defaults on this device
            "float64-stacked" if default_device().type == "cuda" else "float32-separate"
        ]
        tables, seconds = {}, {}
        for variant in variants:
            dtype, mode = variant.split("-")
            precision = {"float64": (torch.float64, 1e-6), "float32": (torch.float32, 1e-4)}
            kind, tol = precision[dtype]
            chosen = ProbeSettings(
                backend=torch_backend(dtype=kind, tol=tol),
                stack_selections=mode == "stacked",
                **settings,
            )
            start = time.perf_counter()
            tables[variant] = sweep(reader, settings=chosen, **common)
            seconds[variant] = time.perf_counter() - start
        for tol in args.sklearn_tol:
            name = f"scikit-learn tol {tol:g}"
            start = time.perf_counter()
            chosen = ProbeSettings(backend=sklearn_backend(tol=tol), **settings)
            tables[name] = sweep(reader, settings=chosen, **common)
            seconds[name] = time.perf_counter() - start
        print(f"\nprobe cells: {len(tables[variants[0]])}")
        for name, t in seconds.items():
            print(f"{name:26s}: {t:8.1f} s")
        for variant in variants:
            for tol in args.sklearn_tol:
                name = f"scikit-learn tol {tol:g}"
                both = tables[variant].merge(tables[name], on=KEYS, suffixes=("_t", "_s"))
                both["diff"] = (both["value_t"] - both["value_s"]).abs()
                worst = both.loc[both["diff"].idxmax()]
                print(f"\n{variant} vs {name}: speed-up {seconds[name] / seconds[variant]:.1f}x, "
                      f"largest accuracy difference {worst['diff']:.4f} ({worst['site']}, "
                      f"{worst['attribute']}, {worst['selection']})")  # fmt: skip
                per_selection = both.groupby("selection")["diff"].max()
                print("  largest difference per selection:", per_selection.round(4).to_dict())

        # Peak memory of a one-site sweep against that site's array.
        site = reader.sites[-1]
        site_bytes = reader.site_array(site).nbytes  # float32 in memory
        on_gpu = default_device().type == "cuda"
        if on_gpu:
            torch.cuda.reset_peak_memory_stats()
            gpu_before = torch.cuda.memory_allocated()
        if _reset_peak():
            before = _rss_now_kib()
            sweep(reader, sites=[site], settings=ProbeSettings(**settings), **common)
            extra = (_rss_peak_kib() - before) * 1024
            print(f"\none-site sweep of {site}: site array {site_bytes / 2**20:.1f} MiB "
                  f"(float32), peak extra host memory {extra / 2**20:.1f} MiB = "
                  f"{extra / site_bytes:.2f}x the site array")  # fmt: skip
        else:
            sweep(reader, sites=[site], settings=ProbeSettings(**settings), **common)
            print("peak host memory not measured (needs Linux /proc/self/clear_refs)")
        if on_gpu:
            gpu = torch.cuda.max_memory_allocated() - gpu_before
            print(f"peak GPU memory of that sweep {gpu / 2**20:.1f} MiB = "
                  f"{gpu / site_bytes:.2f}x the site array")  # fmt: skip
    if not args.cache:
        os.unlink(path)


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
