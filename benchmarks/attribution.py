"""Attribution patching against real (exact) patching of the same cells, side by side in
one run: every site (the projector and every LM layer) x every image token of the
built-in organism, per pair; and integrated gradients and causal tracing on the same
pairs.

    python benchmarks/attribution.py [--pairs 4] [--batch-size 64]

Exact patching takes a forward pass per cell (batched), attribution patching one forward
and one backward pass per pair whatever the number of cells: the ratio grows with
sites x tokens (64 x 7 here; 576 x 33 for LLaVA-1.5-7B).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from interp import load_model
from interp.experiments.attribution import causal_tracing, integrated_gradients
from interp.experiments.patching import attribution_margins, patch_margins
from interp.organism.twins import twin_pair


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    loaded = load_model("organism")
    sites = ["projector", *(f"lm.{i}" for i in range(loaded.adapter.n_lm_layers))]
    seconds: dict[str, list[float]] = {}

    for seed in range(args.pairs):
        pair = twin_pair("color", 64, seed=seed * 10)
        runs = {
            "exact": lambda p: patch_margins(loaded, p, sites, batch_size=args.batch_size),
            "attribution": lambda p: attribution_margins(loaded, p, sites),
            "integrated gradients (projector, 32 steps)": lambda p: integrated_gradients(
                loaded, p.clean, p.question, p.answer, steps=32, batch_size=34
            ),
            "causal tracing (3 draws)": lambda p: causal_tracing(
                loaded, p.clean, p.question, p.answer, sites, batch_size=args.batch_size
            ),
        }
        for name, run in runs.items():
            started = time.perf_counter()
            run(pair)
            seconds.setdefault(name, []).append(time.perf_counter() - started)
    cells = len(sites) * 64
    print(f"organism, {args.pairs} colour twin pairs, {len(sites)} sites x 64 tokens = "
          f"{cells} cells per pair, batch {args.batch_size}")  # fmt: skip
    exact = np.median(seconds["exact"])
    for name, found in seconds.items():
        median = float(np.median(found))
        print(f"{name:45s} {median:7.3f} s per pair (median), exact / this: {exact / median:6.1f}")


if __name__ == "__main__":
    main()
