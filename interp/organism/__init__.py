"""The built-in model organism: a tiny LLaVA trained on the stimuli (train, evaluate, card)."""

from pathlib import Path

ORGANISM_NAME = "organism"
ORGANISM_DIR = Path(__file__).parent / "model"

__all__ = ["ORGANISM_DIR", "ORGANISM_NAME"]
