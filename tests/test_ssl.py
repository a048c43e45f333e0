"""The organism's world's self-supervised encoder: augmentations, a short training run
saved and reached by the DINOv2 adapter, its card, and the shipped encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analyses.encoders import compare_encoders, write_ssl_card
from interp import ConfigError, StimulusSpec, generate, load_model
from interp.experiments.embeddings import embed_batch
from interp.organism import ORGANISM_SSL_DIR
from interp.organism.ssl import (
    MEAN,
    STD,
    SslTrainConfig,
    augment,
    make_ssl_encoder,
    train_ssl,
)


def test_views_are_seeded_crops_normalised_as_the_processor(rng) -> None:
    images = generate(StimulusSpec(n_images=4, seed=1)).images
    one = augment(images, torch.Generator().manual_seed(0))
    again = augment(images, torch.Generator().manual_seed(0))
    other = augment(images, torch.Generator().manual_seed(1))
    assert one.shape == (4, 3, 64, 64) and torch.equal(one, again) and not torch.equal(one, other)
    _, processor = make_ssl_encoder()
    plain = processor(list(images), return_tensors="pt")["pixel_values"]
    low = ((0 - torch.tensor(MEAN)) / torch.tensor(STD))[:, None, None]
    high = ((1 - torch.tensor(MEAN)) / torch.tensor(STD))[:, None, None]
    for x in (one, plain):  # the same normalisation: within the same bounds
        assert (x >= low - 1e-5).all() and (x <= high + 1e-5).all()


def test_a_short_run_is_saved_for_the_dinov2_adapter(tmp_path) -> None:
    folder, history, _ = train_ssl(
        SslTrainConfig(out=str(tmp_path / "ssl"), steps=3, batch_size=8, warmup=1, progress=False)
    )
    assert list(history.columns) == ["step", "loss", "twin_retrieval"] and len(history) == 3
    loaded = load_model(str(folder))
    assert loaded.adapter.family == "DINOv2" and loaded.adapter.patch_grid == (8, 8)
    images = generate(StimulusSpec(n_images=3, seed=2)).images
    assert embed_batch(loaded, images).shape == (3, 128)
    comparison = compare_encoders(
        loaded, load_model("organism"), n_images=30, n_boot=10, attributes=["color"]
    )
    assert set(comparison.encoder) == {"organism (CLIP tower)", "SSL encoder", "both"}
    card = write_ssl_card(folder, comparison).read_text()
    assert "| attribute |" in card and "SimCLR" in card
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        SslTrainConfig(temperature=0)


@pytest.mark.skipif(not (ORGANISM_SSL_DIR / "config.json").is_file(), reason="not shipped")
def test_the_shipped_encoder_is_small_and_documented() -> None:
    size = sum(f.stat().st_size for f in ORGANISM_SSL_DIR.iterdir())
    assert size < 10 * 2**20
    assert (ORGANISM_SSL_DIR / "README.md").read_text().startswith("# vlm-interp organism-ssl")
    loaded = load_model("organism-ssl")
    assert loaded.adapter.family == "DINOv2"
    vectors = embed_batch(loaded, generate(StimulusSpec(n_images=4, seed=0)).images)
    assert np.isfinite(vectors.numpy()).all()
