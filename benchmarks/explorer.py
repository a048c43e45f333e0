"""The patch explorer's cost: the time to build the view of N images (default 100) on the
built-in organism, by part (forward passes, read-outs, probes), the page's size, and the
same scaled to LLaVA-1.5-7B's shapes (an estimate from the shapes: no 7B runs here).

    python benchmarks/explorer.py [--n-images 100] [--out build/explorer-bench.html] [--browser]

With ``--browser``, the page is opened in headless Chromium (Debian's, through Playwright):
the time until it is drawn, and from a click on a patch to the panel.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from analyses.explorer import build_view, view_page
from interp import StimulusSpec, generate, load_model

# LLaVA-1.5-7B: 24 vision layers + projector + 32 LM layers, 576 tokens per image.
LLAVA7B = {"vision_sites": 24, "lm_sites": 32, "tokens": 576}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", default="build/explorer-bench.html")
    parser.add_argument("--browser", action="store_true", help="time the page in Chromium")
    args = parser.parse_args()
    loaded = load_model("organism", attn_implementation="eager")
    data = generate(StimulusSpec(n_images=args.n_images, image_size=64, seed=0))
    started = time.perf_counter()
    view = build_view(loaded, data, images=range(args.n_images), batch_size=args.batch_size)
    built = time.perf_counter() - started
    page = view_page(view.data)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(page, encoding="utf-8")
    sites = view.data["sites"]
    lm = [s for s in sites if s.startswith("lm.")]
    conditions = view.data["conditions"]
    tokens = len(view.data["layouts"][0]["boxes"])
    print(f"organism, {args.n_images} images, {len(sites)} sites ({len(lm)} LM), "
          f"{len(conditions)} conditions, {tokens} tokens per image")  # fmt: skip
    print(f"built in {built:.1f} s: " + json.dumps(view.timings))
    print(f"page: {len(page.encode()) / 2**20:.1f} MiB")
    # Bytes per token, site and condition, measured apart for LM sites (lens words,
    # ranks, attention) and the others (object, probe), then scaled to the 7B's shapes.
    images = view.data["images"]

    def measured(kind: list[str]) -> float:
        size = sum(
            len(json.dumps(image[part][c].get(s)))
            for image in images for c in conditions for s in kind
            for part in ("values", "top_words", "top_features")
        )  # fmt: skip
        return size / (len(images) * len(conditions) * len(kind) * tokens)

    per_lm, per_other = measured(lm), measured([s for s in sites if s not in lm])
    shape = LLAVA7B
    estimate = (
        args.n_images
        * len(conditions)
        * shape["tokens"]
        * (shape["lm_sites"] * per_lm + (shape["vision_sites"] + 1) * per_other)
    )
    print(f"bytes per token, site and condition: LM sites {per_lm:.0f}, others {per_other:.0f}")
    print(f"LLaVA-1.5-7B shapes, {args.n_images} images, every site, {len(conditions)} "
          f"conditions: page about {estimate / 2**20:.0f} MiB (estimate)")  # fmt: skip
    if args.browser:
        browser_times(Path(args.out))


def browser_times(path: Path, clicks: int = 20) -> None:
    """The page in headless Chromium: seconds until drawn; a click on a patch to its panel
    (the median of ``clicks`` clicks at different patches, each through the panel's row)."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=["--no-sandbox"]
        )
        page = browser.new_page(viewport={"width": 1800, "height": 900})
        started = time.perf_counter()
        page.goto(path.resolve().as_uri())
        page.wait_for_selector("#explorer[data-ready=true]")
        print(f"browser: page drawn {time.perf_counter() - started:.2f} s after opening")
        box = page.locator("canvas[data-role=overlay]").bounding_box()
        seconds = []
        for k in range(clicks):
            x, y = box["x"] + 10 + 19 * k % 400, box["y"] + 10 + 37 * k % 400
            panel = "document.querySelector('[data-role=panel]')"
            page.evaluate(f"{panel}.dataset.renderMs = ''")  # set again when it is drawn
            started = time.perf_counter()
            page.mouse.click(x, y)
            page.wait_for_function(f"{panel}.dataset.renderMs !== ''")
            seconds.append(time.perf_counter() - started)
        drawn = page.locator("[data-role=panel]").get_attribute("data-render-ms")
        median = sorted(seconds)[clicks // 2] * 1000
        print(f"browser: click to panel, median of {clicks}: {median:.0f} ms (the last "
              f"panel drawn in {drawn} ms)")  # fmt: skip
        browser.close()


if __name__ == "__main__":
    main()
