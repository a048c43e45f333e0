"""Batched torch probes vs a plain scikit-learn loop: the same sweep, side by side.

    python benchmarks/probe_sweep.py [--n-images 256] [--cache PATH] [--selections ...]

Builds a cache of the built-in organism (or reads ``--cache``), runs the same probe sweep
(same folds, inner cross-validation, penalties, selections) twice, once with the batched
solver (``probes.torch_backend``, on the GPU when present) and once with one scikit-learn
``LogisticRegression`` per problem (``probes.sklearn_backend``), and prints both times,
their ratio and the largest accuracy difference. Then it measures the peak memory of a
one-site sweep against that site's array. Run by hand; not part of the tests.
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
        "--float64",
        action="store_true",
        help="solve the torch probes in float64 at tol 1e-6 (as precise as scikit-learn)",
    )
    parser.add_argument(
        "--sklearn-tol", type=float, default=1e-4, help="scikit-learn's tol (its default 1e-4)"
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
        start = time.perf_counter()
        precise = {"dtype": torch.float64, "tol": 1e-6} if args.float64 else {}
        fast_backend = torch_backend(**precise)
        fast = sweep(reader, settings=ProbeSettings(backend=fast_backend, **settings), **common)
        t_fast = time.perf_counter() - start
        start = time.perf_counter()
        slow = sweep(
            reader,
            settings=ProbeSettings(backend=sklearn_backend(tol=args.sklearn_tol), **settings),
            **common,
        )
        t_slow = time.perf_counter() - start
        both = fast.merge(slow, on=KEYS, suffixes=("_torch", "_sklearn"))
        both["diff"] = (both["value_torch"] - both["value_sklearn"]).abs()
        print(f"\nprobe cells: {len(both)}")
        precision = "float64, tol 1e-6" if args.float64 else "float32"
        print(f"batched torch : {t_fast:8.1f} s ({precision})")
        print(f"scikit-learn  : {t_slow:8.1f} s (tol {args.sklearn_tol:g})")
        print(f"speed-up      : {t_slow / t_fast:8.1f}x")
        worst = both.loc[both["diff"].idxmax()]
        print(f"largest accuracy difference: {worst['diff']:.4f} "
              f"({worst['site']}, {worst['attribute']}, {worst['selection']})")  # fmt: skip
        per_selection = both.groupby("selection")["diff"].max()
        print("largest difference per selection:", per_selection.round(4).to_dict())

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
