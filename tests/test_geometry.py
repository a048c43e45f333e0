"""Non-square images on every family: each token's box in the original image's pixels.

For a 300x200 and a 200x300 image holding one object, the tokens a cache labels as on
the object at ``vision.0`` must be exactly those whose box, worked out here by hand from
the processor's own resize / crop / pad / tile parameters, holds a pixel of the object;
tokens that see only padding must be marked; and repainting the object must change those
tokens the most. The reference below is written from the tiny models' processor settings
(see ``tiny_vlms.py`` and ``interp/organism/tiny_llava.py``), independently of
``interp.models.geometry``.
"""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from tiny_vlms import (
    build_encoder,
    build_gemma3,
    build_idefics3,
    build_llava_next,
    build_paligemma,
    build_qwen2_vl,
)

from caches import CacheReader, extract
from interp import capture_tokens, load_model
from interp.sources import open_source
from probes.sweep import site_labels

SIZES = [(200, 300), (300, 200)]  # (height, width)
BOXES = {(200, 300): (40, 60, 100, 140), (300, 200): (60, 40, 140, 100)}  # x0, y0, x1, y1
BACKGROUND, PAINT, REPAINT = (128, 128, 128), (220, 30, 30), (30, 30, 220)

FAMILIES = [
    "llava", "llava_pad", "llava_next", "paligemma", "gemma3", "qwen2_vl", "qwen2_5_vl",
    "idefics3", "smolvlm", "clip", "siglip", "dinov2",
]  # fmt: skip


def _build(name: str, folder, tiny_dir: str) -> str:
    if name == "llava":
        return tiny_dir
    if name == "llava_pad":  # the LLaVA image processor that pads to a square first
        shutil.copytree(tiny_dir, folder, dirs_exist_ok=True)
        for config_path in (folder / "processor_config.json", folder / "preprocessor_config.json"):
            if not config_path.exists():  # transformers 4 saves the image processor apart
                continue
            config = json.loads(config_path.read_text())
            settings = config.get("image_processor", config)
            if "crop_size" in settings:
                settings.update(image_processor_type="LlavaImageProcessor", do_pad=True)
                config_path.write_text(json.dumps(config))
        return str(folder)
    builders = {
        "llava_next": build_llava_next,
        "paligemma": build_paligemma,
        "gemma3": build_gemma3,
        "qwen2_vl": lambda f: build_qwen2_vl(f, version="2"),
        "qwen2_5_vl": lambda f: build_qwen2_vl(f, version="2.5"),
        "idefics3": build_idefics3,
        "smolvlm": lambda f: build_idefics3(f, smolvlm=True),
    }
    if name in builders:
        return builders[name](folder)
    return build_encoder(name, folder)


# ----- the reference: every view as (region in the original image, rows, cols) ----------
def _short_side_crop(height: int, width: int, short: int, crop: int) -> tuple:
    """Resize the shorter side to ``short`` (the longer: int of its share), then take the
    centre ``crop`` square (CLIP's image processor)."""
    if height <= width:
        new_h, new_w = short, int(short * width / height)
    else:
        new_h, new_w = int(short * height / width), short
    top, left = (new_h - crop) // 2, (new_w - crop) // 2
    fy, fx = height / new_h, width / new_w  # original px per resized px
    return (top * fy, left * fx, (top + crop) * fy, (left + crop) * fx)


def _llava_next_canvas(height: int, width: int) -> tuple:
    """The pinpoint the image fits best (most of its pixels kept, then least waste), the
    image resized into it keeping its aspect ratio (rounding up) and centred."""
    best, kept_best, waste_best = None, -1, math.inf
    for ph, pw in [(16, 32), (32, 16), (32, 32)]:
        scale = min(pw / width, ph / height)
        kept = min(int(width * scale) * int(height * scale), width * height)
        waste = ph * pw - kept
        if kept > kept_best or (kept == kept_best and waste < waste_best):
            best, kept_best, waste_best = (ph, pw), kept, waste
    ph, pw = best
    if pw / width < ph / height:
        new_w, new_h = pw, min(math.ceil(height * pw / width), ph)
    else:
        new_h, new_w = ph, min(math.ceil(width * ph / height), pw)
    top, left = (ph - new_h) // 2, (pw - new_w) // 2
    fy, fx = height / new_h, width / new_w
    return (-top * fy, -left * fx, (ph - top) * fy, (pw - left) * fx), ph // 16, pw // 16


def _qwen_grid(height: int, width: int) -> tuple[int, int]:
    """Patch rows and cols after Qwen2-VL's resize: multiples of 8 px (4 px patches merged
    2x2) and at most 64x64 px, here by shrinking the image by sqrt(pixels / 4096)."""
    beta = math.sqrt(height * width / (64 * 64))
    return math.floor(height / beta / 8) * 8 // 4, math.floor(width / beta / 8) * 8 // 4


def reference_views(name: str, height: int, width: int) -> list[tuple]:
    whole = (0.0, 0.0, float(height), float(width))
    if name in ("llava", "clip", "dinov2"):  # 64 px / 8 px patches; 32 px / 8 px
        side, grid = (64, 8) if name == "llava" else (32, 4)
        return [(_short_side_crop(height, width, side, side), grid, grid)]
    if name == "llava_pad":  # centred on a square of the longer side, then 64 px
        side = max(height, width)
        top, left = (side - height) // 2, (side - width) // 2
        return [((-top, -left, side - top, side - left), 8, 8)]
    if name in ("paligemma", "gemma3", "siglip"):  # stretched to the square input
        return [(whole, 4, 4)]
    if name in ("qwen2_vl", "qwen2_5_vl"):  # stretched to the resized grid
        return [(whole, *_qwen_grid(height, width))]
    if name in ("idefics3", "smolvlm"):  # 32 px longest side -> 2x2 tiles of 16, global
        y_step, x_step = height / 2, width / 2
        tiles = [
            ((i * y_step, j * x_step, (i + 1) * y_step, (j + 1) * x_step), 4, 4)
            for i in range(2)
            for j in range(2)
        ]
        return [*tiles, (whole, 4, 4)]
    assert name == "llava_next"  # base view stretched to 16 px, then the canvas crops
    (y0, x0, y1, x1), rows, cols = _llava_next_canvas(height, width)
    y_step, x_step = (y1 - y0) / rows, (x1 - x0) / cols
    crops = [
        ((y0 + i * y_step, x0 + j * x_step, y0 + (i + 1) * y_step, x0 + (j + 1) * x_step), 4, 4)
        for i in range(rows)
        for j in range(cols)
    ]
    return [(whole, 4, 4), *crops]


def reference_boxes(name: str, height: int, width: int) -> np.ndarray:
    """``(tokens, 4)`` (y0, x0, y1, x1) of every vision.0 token, clipped to the image."""
    out = []
    for (y0, x0, y1, x1), rows, cols in reference_views(name, height, width):
        h, w = (y1 - y0) / rows, (x1 - x0) / cols
        for r in range(rows):
            for c in range(cols):
                box = (y0 + r * h, x0 + c * w, y0 + (r + 1) * h, x0 + (c + 1) * w)
                out.append(np.clip(box, 0, [height, width, height, width]))
    return np.array(out)


def holds_object(boxes: np.ndarray, obj: tuple[int, int, int, int]) -> np.ndarray:
    """Boxes holding the centre of some object pixel (pixel x has its centre at x + 0.5)."""
    x0, y0, x1, y1 = obj
    ys, xs = np.arange(y0, y1) + 0.5, np.arange(x0, x1) + 0.5
    in_y = (ys[None] >= boxes[:, :1]) & (ys[None] < boxes[:, 2:3])
    in_x = (xs[None] >= boxes[:, 1:2]) & (xs[None] < boxes[:, 3:4])
    return in_y.any(1) & in_x.any(1)


def _picture(size: tuple[int, int], colour) -> np.ndarray:
    image = np.empty((*size, 3), dtype=np.uint8)
    image[:] = BACKGROUND
    x0, y0, x1, y1 = BOXES[size]
    image[y0:y1, x0:x1] = colour
    return image


def _assert_same_boxes(found: np.ndarray, expected: np.ndarray) -> None:
    """The same boxes (float32 storage: to a thousandth of a pixel), in any order."""
    assert len(found) == len(expected)
    order = lambda b: b[np.lexsort(np.round(b, 2).T[::-1])]  # noqa: E731
    np.testing.assert_allclose(order(found.astype(np.float64)), order(expected), atol=1e-3)


@pytest.fixture(scope="module")
def folder_of_photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    rows = []
    for k, size in enumerate(SIZES):
        Image.fromarray(_picture(size, PAINT)).save(folder / f"{k}.png")
        x0, y0, x1, y1 = BOXES[size]
        objects = [{"box": [x0, y0, x1, y1], "tint": "red"}]
        rows.append({"image": f"{k}.png", "objects": json.dumps(objects), "tall": k})
    pd.DataFrame(rows).to_csv(folder / "labels.csv", index=False)
    return folder


@pytest.mark.parametrize("name", FAMILIES)
def test_object_tokens_of_non_square_images_follow_the_processor(
    name, tiny_dir, folder_of_photos, tmp_path
) -> None:
    loaded = load_model(_build(name, tmp_path / "model", tiny_dir))
    prompt = loaded.adapter.default_prompt("Describe the image.")
    data = open_source(folder_of_photos)
    assert data.sizes.tolist() == [list(s) for s in SIZES]
    path = extract(
        loaded, data, tmp_path / "c.h5", sites=["vision.0"], conditions=["baseline"],
        progress=False,
    )  # fmt: skip
    with CacheReader(path) as reader:
        assert reader.image_sizes.tolist() == [list(s) for s in SIZES]
        labels = site_labels(reader, ["tall"], "vision.0").token_objects
        offsets = reader.offsets("vision.0")
        for i, (height, width) in enumerate(SIZES):
            boxes = reader.layout("vision.0", image=i).boxes
            found = labels[offsets[i] : offsets[i + 1]]
            expected = reference_boxes(name, height, width)
            assert len(boxes) == len(expected)  # every view's every patch, padding too
            on = holds_object(expected, BOXES[(height, width)])
            assert on.any() and not on.all()
            _assert_same_boxes(boxes[found == 0], expected[on])
            empty = (expected[:, 2] <= expected[:, 0]) | (expected[:, 3] <= expected[:, 1])
            _assert_same_boxes(boxes[found == -2], expected[empty])  # padding is marked
            # Repainting the object changes its tokens the most.
            acts = [
                capture_tokens(loaded, _picture((height, width), colour)[None], ["vision.0"],
                               prompt=prompt).acts["vision.0"][0]
                for colour in (PAINT, REPAINT)
            ]  # fmt: skip
            change = (acts[0] - acts[1]).norm(dim=-1).numpy()  # (tokens,)
            # (The processor's antialiased downscaling blurs the object into its
            # neighbours' pixels, so they change too, less.)
            assert found[int(change.argmax())] == 0
            assert change[found == 0].mean() > 1.5 * change[found == -1].mean()
    if name == "llava_pad":  # the square's margins are padding tokens
        assert (labels == -2).sum() == 2 * 16
    if name == "llava_next":  # the canvas has padding around a 3:2 image
        assert (labels == -2).any()


def test_the_pixel_probe_scores_what_the_processor_shows(tmp_path) -> None:
    """A CLIP encoder centre-crops 200x300 and 300x200 photographs: the pixel probe
    rebuilds the cropped middle only (fractional 50 px patches, resampled by area) and
    scores those pixels alone; the cut-off sides stay empty."""
    from probes import pixel_sweep

    loaded = load_model(build_encoder("clip", tmp_path / "clip"))
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    folder.mkdir()
    rows = []
    for k in range(12):
        height, width = SIZES[k % 2]
        smooth = rng.integers(0, 256, (4, 6, 3) if k % 2 == 0 else (6, 4, 3), dtype=np.uint8)
        picture = Image.fromarray(smooth).resize((width, height), Image.Resampling.BILINEAR)
        picture.save(folder / f"{k}.png")
        rows.append({"image": f"{k}.png", "k": k})
    pd.DataFrame(rows).to_csv(folder / "labels.csv", index=False)
    path = extract(loaded, open_source(folder), tmp_path / "c.h5", progress=False)
    with CacheReader(path) as reader:
        table, shown = pixel_sweep(reader, n_splits=3, n_boot=20, progress=False)
    assert set(table.site) == {"vision.0", "vision.1"}
    assert np.isfinite(table.value).all() and np.isfinite(table.chance).all()
    wide, tall = shown["vision.0"][0], shown["vision.0"][1]  # 200x300, 300x200
    assert (wide[:, :50] == 0).all() and (wide[:, 250:] == 0).all() and wide[:, 50:250].any()
    assert (tall[:50] == 0).all() and (tall[250:] == 0).all() and tall[50:250, :200].any()


@pytest.mark.parametrize("name", ["llava", "qwen2_vl"])
def test_images_of_mixed_sizes_share_a_forward_pass_where_inputs_allow(
    name, tiny_dir, tmp_path, monkeypatch
) -> None:
    """LLaVA-1.5 crops every image to one input: a batch of 200x300 and 300x200 images
    runs as one forward pass, each image's tokens as if it ran alone. Qwen2-VL's token
    count follows the image: one pass per size."""
    import caches.extraction as extraction

    loaded = load_model(_build(name, tmp_path / "model", tiny_dir))
    prompt = loaded.adapter.default_prompt("Describe the image.")
    canvas = np.zeros((3, 300, 300, 3), dtype=np.uint8)
    sizes = np.array([SIZES[0], SIZES[1], SIZES[0]])
    for k, (height, width) in enumerate(sizes):
        canvas[k, :height, :width] = _picture((height, width), (PAINT, REPAINT, PAINT)[k])
        canvas[k, :height, :width, 1] += np.uint8(20 * k)  # each image its own
    calls = []
    real = extraction.capture_tokens
    monkeypatch.setattr(
        extraction, "capture_tokens", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    sites = ["vision.0", "projector", "lm.1"]
    maps = np.full(canvas.shape[:3], -1, dtype=np.int8)  # (3, H, W)
    acts, _, _ = extraction._capture_batch(loaded, 0, canvas, maps, sizes, sites, prompt, None)
    assert len(calls) == (1 if name == "llava" else 2)
    for k, (height, width) in enumerate(sizes):
        alone = real(loaded, canvas[k : k + 1, :height, :width], sites, prompt=prompt).acts
        for site in sites:
            np.testing.assert_allclose(acts[site][k], alone[site][0], rtol=1e-4, atol=1e-5)
