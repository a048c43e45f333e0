"""Shared fixtures: tiny LLaVA models built offline, saved, and loaded back."""

from __future__ import annotations

import os

import numpy as np
import pytest

# No network in tests: hub look-ups fail fast instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from interp import StimulusSpec, generate, load_model  # noqa: E402
from interp.organism.tiny_llava import build_tiny_llava  # noqa: E402


@pytest.fixture(scope="module")
def organism():
    """The built-in model organism (offline: HF_HUB_OFFLINE=1 above), once per module."""
    return load_model("organism")


@pytest.fixture(scope="module")
def pair():
    """The organism's colour twin pair of seed 0 (a clean / corrupted patching pair)."""
    from interp.organism.twins import twin_pair

    return twin_pair("color", 64, seed=0)


@pytest.fixture(scope="session", autouse=True)
def _builtin_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Built-in models materialise in a per-session folder, not the user's cache."""
    os.environ["VLM_INTERP_HOME"] = str(tmp_path_factory.mktemp("vlm-interp-home"))


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny LLaVA with a chat template, as save_pretrained writes it."""
    return str(build_tiny_llava(tmp_path_factory.mktemp("tiny-llava"), seed=0))


@pytest.fixture(scope="session")
def plain_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny LLaVA saved without a chat template, with the 'full' feature strategy."""
    folder = tmp_path_factory.mktemp("tiny-llava-plain")
    return str(
        build_tiny_llava(
            folder,
            seed=1,
            chat_template=False,
            vision_feature_select_strategy="full",
            vision_feature_layer=-1,
            image_size=32,
            lm_layers=4,
        )
    )


@pytest.fixture(scope="session")
def loaded(tiny_dir: str):
    return load_model(tiny_dir)


@pytest.fixture(scope="session")
def stimuli():
    return generate(StimulusSpec(n_images=6, image_size=64, seed=3))


@pytest.fixture(scope="session")
def prompt(loaded) -> str:
    return loaded.adapter.default_prompt("Describe the image.")


def hook_state(model) -> dict[str, tuple[int, int]]:
    """(forward hooks, forward pre-hooks) per module: to check nothing is left attached."""
    return {
        name: (len(m._forward_hooks), len(m._forward_pre_hooks))
        for name, m in model.named_modules()
    }


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
