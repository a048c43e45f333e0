"""Extraction against the bare forward pass: the same model, images and batch size,
side by side in one run.

    python benchmarks/extraction.py [--models organism wide] [--n-images 128]
        [--batch-size 32] [--repeats 3] [--memory-images 128 512]

For each model, interleaved repetitions (medians reported) of:

- ``forward``: the bare forward pass on preprocessed inputs (the limit; preprocessing,
  the same for every method, is timed apart);
- ``toolkit``: ``caches.extract`` of the same sites to HDF5, writing included
  (preprocessing included too, so its ratio is conservative);
- ``hidden_states``: Hugging Face ``output_hidden_states=True`` plus writing the
  image-token slices with h5py;
- ``hooks``: plain forward hooks on the sites' modules plus writing with h5py;
- ``toolkit_all``: ``caches.extract`` of every site (vision layers, projector, LM);
- ``raw_write``, ``raw_write_all``: as many bytes as ``toolkit`` and ``toolkit_all``
  store, written sequentially to one file in the same folder (what the folder takes);
  the toolkit is reported against the smaller of these and the forward pass.

The sites compared are what ``output_hidden_states`` gives at the image tokens: every LM
layer but the last (whose hidden state comes after the final norm).

Prints images per second and each method's ratio to the bare forward pass. Then the
peak host memory of ``caches.extract`` at each of ``--memory-images`` (one process each:
flat, not growing with the images). Models: ``organism`` (the built-in one) and ``wide``
(a tiny LLaVA built from configs: CLIP 6 x 256, Llama 8 x 512, 64 px, 8 px patches), on
the GPU when there is one (``--device-map cuda``, ``--dtype float16``), and there
``llava7b`` (LLaVA-1.5-7B's shapes, random weights built on the GPU: CLIP 24 x 1024 at
336 px, 576 image tokens, Llama 32 x 4096). ``toolkit_few`` extracts every 8th compared
site (writing 1/8 of the bytes). Checks that the toolkit's cache equals the hooks' file.
Run by hand; not part of the tests.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from caches import extract
from interp import StimulusSpec, generate, load_model
from interp.adapters import adapter_class_for
from interp.models.loading import LoadedModel
from interp.organism.tiny_llava import build_tiny_llava, make_processor

WIDE = {"vision_layers": 6, "hidden_size": 256, "lm_layers": 8, "lm_hidden_size": 512}


# LLaVA-1.5-7B's shapes: CLIP ViT-L/14 at 336 px (24 x 1024, 576 patches), Vicuna-7B
# (32 x 4096); random weights, built in memory on the device (nothing to download).
LLAVA_7B = {
    "vision": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
               "num_attention_heads": 16, "image_size": 336, "patch_size": 14},
    "text": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
             "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32064,
             "max_position_embeddings": 4096},
}  # fmt: skip


def llava_shaped(shapes: dict, device: str, dtype: torch.dtype) -> LoadedModel:
    """A random-weight LLaVA of ``shapes`` (LLAVA_7B's form), built on ``device`` in
    ``dtype`` without a copy on the host, with the word-level processor."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig
    from transformers import LlavaForConditionalGeneration as Llava

    vision = shapes["vision"]
    processor = make_processor(vision["image_size"], vision["patch_size"])
    tokenizer = processor.tokenizer
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**vision, projection_dim=vision["hidden_size"]),
        text_config=LlamaConfig(
            **shapes["text"],
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        ),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Llava(config).eval()
    finally:
        torch.set_default_dtype(default)
    adapter = adapter_class_for(config, "")(model, processor)
    return LoadedModel(model=model, processor=processor, adapter=adapter, source="llava-7b-shaped")


def _load(name: str, args: argparse.Namespace, folder: Path) -> tuple[LoadedModel, str | None]:
    """The model ``name`` and the source a fresh process loads it from (None: built in
    memory only)."""
    if name == "llava7b":
        dtype = getattr(torch, args.dtype or "float16")
        return llava_shaped(LLAVA_7B, args.device_map or "cpu", dtype), None
    source = str(build_tiny_llava(folder / "wide", seed=0, **WIDE)) if name == "wide" else name
    return load_model(source, dtype=args.dtype, device_map=args.device_map), source


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _batches(loaded, images: np.ndarray, prompt: str, batch_size: int) -> list[dict]:
    return [
        loaded.move_inputs(loaded.adapter.build_inputs(images[s : s + batch_size], prompt))
        for s in range(0, len(images), batch_size)
    ]


def _bare(loaded, batches: list[dict]) -> None:
    with torch.no_grad():
        for inputs in batches:
            loaded.model(**inputs)
    _sync(loaded.device)


def _writer(path: Path, loaded, n: int, shapes: dict[str, tuple[int, int]]) -> h5py.File:
    handle = h5py.File(path, "w")
    for site, (tokens, width) in shapes.items():
        handle.create_dataset(
            site, shape=(n, tokens, width), dtype="float16", chunks=(1, tokens, width)
        )
    return handle


def _shapes(loaded, images: np.ndarray, prompt: str) -> dict[str, tuple[int, int]]:
    from interp import capture

    found = capture(loaded, images[:1], loaded.adapter.sites(), prompt=prompt)
    return {site: tuple(v.shape[1:]) for site, v in found.items()}


def _hidden_states(loaded, batches: list[dict], path: Path, shapes: dict) -> None:
    """``output_hidden_states=True``: the LM's hidden states at the image tokens, every
    layer's slice written with h5py."""
    adapter = loaded.adapter
    n = sum(len(b["input_ids"]) for b in batches)
    with _writer(path, loaded, n, shapes) as handle, torch.no_grad():
        start = 0
        for inputs in batches:
            out = loaded.model(**inputs, output_hidden_states=True)
            positions = adapter.token_positions(inputs).patch  # (batch, tokens)
            rows = torch.arange(len(positions), device=positions.device)[:, None]
            k = len(positions)
            for site in shapes:  # lm.<i>: hidden_states[i + 1]
                value = out.hidden_states[int(site.split(".")[1]) + 1][rows, positions]
                handle[site][start : start + k] = value.float().cpu().numpy()
            start += k
    _sync(loaded.device)


def _hooks(loaded, batches: list[dict], path: Path, shapes: dict) -> None:
    """Plain forward hooks on every site's module; slices written with h5py."""
    adapter = loaded.adapter
    modules = {site: loaded.model.get_submodule(adapter.module_path(site)) for site in shapes}
    n = sum(len(b["input_ids"]) for b in batches)
    seen: dict[str, torch.Tensor] = {}
    handles = [
        module.register_forward_hook(lambda _m, _i, out, site=site: seen.__setitem__(site, out))
        for site, module in modules.items()
    ]
    try:
        with _writer(path, loaded, n, shapes) as handle, torch.no_grad():
            start = 0
            for inputs in batches:
                loaded.model(**inputs)
                positions = adapter.token_positions(inputs)
                k = len(inputs["input_ids"])
                for site, value in seen.items():
                    tokens = adapter.select(site, value, positions)
                    handle[site][start : start + k] = tokens.float().cpu().numpy()
                start += k
    finally:
        for h in handles:
            h.remove()
    _sync(loaded.device)


def _raw_write(path: Path, nbytes: int, block: np.ndarray) -> None:
    """``nbytes`` written to one file, sequentially, ``block`` (uint8) at a time: what the
    folder takes at best."""
    with open(path, "wb") as handle:
        for start in range(0, nbytes, len(block)):
            block[: min(len(block), nbytes - start)].tofile(handle)
    path.unlink()


def _peak_memory(model: str, n_images: int, batch_size: int, dtype: str | None) -> int:
    """Peak resident memory (MiB) of a fresh process extracting ``n_images``."""
    code = f"""
import resource, tempfile, os
from caches import extract
from interp import StimulusSpec, generate, load_model
loaded = load_model({model!r}, dtype={dtype!r})
data = generate(StimulusSpec(n_images={n_images}, image_size=loaded.adapter.native_image_size))
with tempfile.TemporaryDirectory() as tmp:
    extract(loaded, data, os.path.join(tmp, "c.h5"), conditions=["baseline"],
            batch_size={batch_size}, progress=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def bench(name: str, args: argparse.Namespace, folder: Path) -> None:
    """Every method on one model, interleaved; then peak memory."""
    loaded, source = _load(name, args, folder)
    adapter = loaded.adapter
    data = generate(StimulusSpec(n_images=args.n_images, image_size=adapter.native_image_size))
    prompt = adapter.default_prompt("Describe the image.")
    start = time.perf_counter()
    batches = _batches(loaded, data.images, prompt, args.batch_size)
    preprocess = time.perf_counter() - start
    shapes = _shapes(loaded, data.images, prompt)
    compared = {s: v for s, v in shapes.items() if s.startswith("lm.")}
    compared.pop(f"lm.{adapter.n_lm_layers - 1}")

    def toolkit(sites: list[str], path: Path) -> None:
        extract(  # random weights may overflow: counted, not refused (the check still runs)
            loaded, data, path, sites=sites, conditions=["baseline"], allow_nonfinite=True,
            batch_size=args.batch_size, overwrite=True, progress=False, store_pixels=False,
        )  # fmt: skip
        _sync(loaded.device)

    few = list(compared)[::8]
    itemsize = 2  # the default storage dtypes (float16, bfloat16)
    written = sum(t * w for t, w in compared.values()) * args.n_images * itemsize
    written_all = sum(t * w for t, w in shapes.values()) * args.n_images * itemsize
    block = np.random.default_rng(0).integers(0, 255, 64 * 2**20, dtype=np.uint8)
    methods = {
        "forward": lambda: _bare(loaded, batches),
        "toolkit": lambda: toolkit(list(compared), folder / "t.h5"),
        "hidden_states": lambda: _hidden_states(loaded, batches, folder / "h.h5", compared),
        "hooks": lambda: _hooks(loaded, batches, folder / "k.h5", compared),
        "toolkit_all": lambda: toolkit(adapter.sites(), folder / "a.h5"),
        "toolkit_few": lambda: toolkit(few, folder / "f.h5"),
        "raw_write": lambda: _raw_write(folder / "raw.bin", written, block),
        "raw_write_all": lambda: _raw_write(folder / "raw.bin", written_all, block),
    }
    _bare(loaded, batches[:1])  # warm-up
    times: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(args.repeats):  # interleaved
        for method, run in methods.items():
            start = time.perf_counter()
            run()
            times[method].append(time.perf_counter() - start)
    base = statistics.median(times["forward"])
    print(
        f"\n{name}: {args.n_images} images of {adapter.native_image_size} px, batch "
        f"{args.batch_size}; sites compared: lm.0 to lm.{adapter.n_lm_layers - 2} "
        f"({len(shapes)} with toolkit_all); preprocessing {preprocess:.2f} s (outside "
        f"'forward', inside 'toolkit')"
    )
    print(f"{'method':15s} {'median s':>9s} {'img/s':>8s} {'vs forward':>11s}")
    for method, found in times.items():
        median = statistics.median(found)
        print(f"{method:15s} {median:9.3f} {args.n_images / median:8.1f} {base / median:10.2f}x")
    print(
        f"('toolkit' writes {written / 2**30:.2f} GiB to {folder}, 'toolkit_all' "
        f"{written_all / 2**30:.2f} GiB; 'raw_write' and 'raw_write_all' write as many bytes "
        f"to one file there, sequentially; 'toolkit_few': {', '.join(few)}, the sites "
        f"written being 1/8 of them)"
    )
    for method, raw in (("toolkit", "raw_write"), ("toolkit_all", "raw_write_all")):
        limit = max(base, statistics.median(times[raw]))  # the slower of the two
        print(
            f"{method} against the smaller of the forward pass and {raw}: "
            f"{limit / statistics.median(times[method]):.2f}x"
        )
    with h5py.File(folder / "t.h5", "r") as ours, h5py.File(folder / "k.h5", "r") as hooks:
        same = all(
            np.array_equal(ours[f"acts/{site}"][()], hooks[site][()], equal_nan=True)
            for site in compared
        )
    print(f"the toolkit's cache equals the hooks' file bit for bit: {same}")
    if loaded.device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(loaded.device) / 2**30
        print(f"peak GPU memory: {peak:.1f} GiB ({torch.cuda.get_device_name(loaded.device)})")
    for n in args.memory_images if source is not None else []:
        peak = _peak_memory(source, n, args.batch_size, args.dtype)
        print(f"peak host memory extracting {n} images (every site): {peak} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["organism", "wide"])
    parser.add_argument("--n-images", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-images", nargs="+", type=int, default=[128, 512])
    parser.add_argument("--device-map", default=None, help="e.g. cuda (default: CPU)")
    parser.add_argument("--dtype", default=None, help="e.g. float16")
    parser.add_argument(
        "--folder", default=None, help="where the files are written (default: a temporary "
        "folder; /dev/shm measures the toolkit rather than the disk)",
    )  # fmt: skip
    args = parser.parse_args()
    device = args.device_map or "cpu"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")
    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        for name in args.models:
            bench(name, args, Path(tmp))


if __name__ == "__main__":
    main()
