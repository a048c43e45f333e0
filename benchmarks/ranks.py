"""How data-parallel extraction scales with ranks: the same command under ``torchrun`` with
1, 2, 4, ... processes, side by side in one run.

    python benchmarks/ranks.py [--ranks 1 2] [--model wide] [--n-images 256]
        [--batch-size 16] [--threads 2]

Each run is ``torchrun --nproc-per-node R -m interp extract`` (every site, the baseline
only) into a fresh folder, timed from the start of torchrun to the published cache
(model loading included); each rank gets ``--threads / R`` CPU threads, so every run uses
the same cores. Prints the seconds, the speed-up over one rank, the bytes of the master
file and of the rank files, and whether the cache equals the one-rank cache dataset by
dataset, bit for bit. ``wide`` is a tiny LLaVA built from configs (CLIP 6 x 256, Llama 8 x
512). On the CPU (the ranks meet through gloo); run by hand, not part of the tests.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py

from interp.organism.tiny_llava import build_tiny_llava

WIDE = {"vision_layers": 6, "hidden_size": 256, "lm_layers": 8, "lm_hidden_size": 512}
ROOT = Path(__file__).resolve().parents[1]


def _same(a: Path, b: Path) -> bool:
    """Whether two caches hold the same datasets, bit for bit."""
    names: list[str] = []
    with h5py.File(a, "r") as x, h5py.File(b, "r") as y:
        y.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        return all(
            n in x and x[n][()].tobytes() == y[n][()].tobytes() and x[n].dtype == y[n].dtype
            for n in names
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--model", default="wide", help="wide, organism, or a model folder")
    parser.add_argument("--n-images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = (
            str(build_tiny_llava(folder / "wide", seed=0, **WIDE))
            if args.model == "wide"
            else args.model
        )
        print(
            f"{args.model}: {args.n_images} images, batch {args.batch_size}, every site, "
            f"{args.threads} CPU threads shared by the ranks"
        )
        header = ("ranks", "seconds", "speed-up", "master", "rank files")
        print("{:>5s} {:>8s} {:>9s} {:>9s} {:>11s} same".format(*header))
        first: tuple[float, Path] | None = None
        for ranks in args.ranks:
            out = folder / f"r{ranks}" / "cache.h5"
            env = {
                **os.environ,
                "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                "OMP_NUM_THREADS": str(max(1, args.threads // ranks)),
            }
            command = [
                sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks),
                "-m", "interp", "extract", "--model", model, "--n-images", str(args.n_images),
                "--batch-size", str(args.batch_size), "--conditions", "baseline",
                "--out", str(out), "--no-progress",
            ]  # fmt: skip
            start = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"torchrun failed with {ranks} ranks:\n{done.stderr[-4000:]}")
            seconds = time.perf_counter() - start
            parts = sum(p.stat().st_size for p in out.parent.glob("cache.rank*.h5"))
            first = first or (seconds, out)
            print(
                f"{ranks:5d} {seconds:8.1f} {first[0] / seconds:8.2f}x "
                f"{out.stat().st_size / 2**20:7.1f}Mi {parts / 2**20:9.1f}Mi "
                f"{_same(out, first[1])}"
            )


if __name__ == "__main__":
    main()
