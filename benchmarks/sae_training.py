"""SAE training from a cache vs a plain PyTorch loop over the same tokens in memory, side by
side, and the stream's memory against the number of images.

    python benchmarks/sae_training.py [--n-images 512] [--site projector] [--epochs 2]
        [--expansion 8] [--k 16] [--batch-size 512] [--device-map cuda]

Builds a cache of the built-in organism (``--n-images`` stimuli, one site), then trains
the same TopK SAE (same seed, batch size, learning rate, epochs) twice: with
``probes.sae_training.train_saes`` (tokens streamed from the HDF5 file through a shuffle
buffer, checkpoints, held-out metrics) and with a plain loop over a tensor of every
token held in memory (shuffled once per epoch, Adam, decoder rows renormalised), and
prints tokens per second of each and their ratio. Then it measures, in a fresh process
each, the peak memory of training on ``n`` and on ``4n`` images: the stream's memory
should not grow with the images. Run by hand; not part of the tests.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from caches import CacheReader, extract
from interp import StimulusSpec, generate, load_model
from interp.models.sae import SparseAutoencoder
from probes.sae_training import SaeSpec, SaeTraining, train_saes


def _cache(folder: Path, n_images: int, site: str) -> Path:
    loaded = load_model("organism")
    stimuli = generate(StimulusSpec(n_images=n_images, seed=0))
    return extract(
        loaded, stimuli, folder / f"cache{n_images}.h5", sites=[site], conditions=["baseline"],
        progress=False, store_pixels=False,
    )  # fmt: skip


def _plain(tokens: np.ndarray, args: argparse.Namespace, device: torch.device) -> float:
    """The same SAE trained by a plain loop over ``tokens`` in memory: seconds taken."""
    x_all = torch.from_numpy(tokens).to(device)  # (tokens, d)
    scale = (tokens.shape[1] ** 0.5) / x_all.norm(dim=1).mean()
    x_all = x_all * scale
    sae = SparseAutoencoder(tokens.shape[1], args.expansion * tokens.shape[1], "topk", args.k)
    sae.to(device)
    optimiser = torch.optim.Adam(sae.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(args.epochs):
        order = torch.randperm(len(x_all), generator=generator).to(device)
        for i in range(0, len(x_all), args.batch_size):
            x = x_all[order[i : i + args.batch_size]]
            x_hat = sae(x)
            loss = (x_hat - x).pow(2).sum(-1).mean() / (x - x.mean(0)).pow(2).sum(-1).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            sae.normalize_decoder()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _peak(cache: Path, args: argparse.Namespace) -> int:
    """Peak resident memory (KiB) of a fresh process training on ``cache``."""
    code = (
        "import json, resource, sys; from caches import CacheReader; "
        "from probes.sae_training import SaeSpec, SaeTraining, train_saes; "
        f"r = CacheReader({str(cache)!r}); "
        f"train_saes(r, {args.site!r}, [SaeSpec('topk', {args.expansion}, {args.k})], "
        f"{str(cache.parent / 'peak')!r}, training=SaeTraining(epochs=1, "
        f"batch_size={args.batch_size}), progress=False, device='cpu'); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-images", type=int, default=512)
    parser.add_argument("--site", default="projector")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--expansion", type=int, default=8)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--device-map", default=None, help="e.g. cuda (default: CPU)")
    args = parser.parse_args()
    device = torch.device(args.device_map or "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cache = _cache(folder, args.n_images, args.site)
        with CacheReader(cache) as reader:
            tokens = reader.site_tokens(args.site).values
            n_train = int(len(tokens) * 0.9)
            training = SaeTraining(epochs=args.epochs, batch_size=args.batch_size)
            start = time.perf_counter()
            train_saes(
                reader, args.site, [SaeSpec("topk", args.expansion, args.k)], folder / "saes",
                training=training, device=str(device), progress=False,
            )  # fmt: skip
            toolkit = time.perf_counter() - start
        plain = _plain(tokens[:n_train], args, device)
        seen = n_train * args.epochs
        print(
            f"{args.site}: {len(tokens)} tokens of width {tokens.shape[1]}, TopK x"
            f"{args.expansion} k={args.k}, {args.epochs} epochs, batch {args.batch_size}, "
            f"on {device}"
        )
        print(f"  toolkit (streamed, with held-out metrics): {seen / toolkit:,.0f} tokens/s")
        print(f"  plain loop (every token in memory):        {seen / plain:,.0f} tokens/s")
        print(f"  ratio toolkit / plain: {plain / toolkit:.2f}x")
        bigger = _cache(folder, 4 * args.n_images, args.site)
        peaks = {
            n: _peak(c, args) for n, c in ((args.n_images, cache), (4 * args.n_images, bigger))
        }
        print(
            "  peak memory of training (fresh process): "
            + json.dumps({f"{n} images": f"{kib / 1024:.0f} MiB" for n, kib in peaks.items()})
        )


if __name__ == "__main__":
    main()
