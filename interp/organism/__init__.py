"""The built-in model organism: a tiny LLaVA trained on the stimuli (train, evaluate, card)."""

from pathlib import Path

ORGANISM_NAME = "organism"
ORGANISM_DIR = Path(__file__).parent / "model"
# Its world's self-supervised vision encoder (interp.organism.ssl): blind pairs' reference.
ORGANISM_SSL_NAME = "organism-ssl"
ORGANISM_SSL_DIR = Path(__file__).parent / "ssl_model"
# The built-ins shipped as folders, and the command that rebuilds each.
SHIPPED = {
    ORGANISM_NAME: (ORGANISM_DIR, "interp organism train"),
    ORGANISM_SSL_NAME: (ORGANISM_SSL_DIR, "interp organism train-ssl"),
}

__all__ = ["ORGANISM_DIR", "ORGANISM_NAME", "ORGANISM_SSL_DIR", "ORGANISM_SSL_NAME", "SHIPPED"]
