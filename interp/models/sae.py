"""Sparse autoencoders (SAEs) of a site's tokens, in the file format SAELens reads.

An SAE maps a token ``x`` ``(d_in,)`` to sparse features ``f = act(pre)``, ``pre = (x -
b_dec) @ W_enc + b_enc`` ``(d_sae,)``, and back to ``x_hat = f @ W_dec + b_dec``. The
architectures:

- ``topk``: the ``k`` largest pre-activations, through a ReLU, the rest zero (Gao et al.);
- ``batchtopk``: in training, the ``k x batch`` largest over the whole batch (Bussmann et
  al.); at inference a JumpReLU whose threshold is the running mean of the smallest kept
  activation, saved as SAELens's ``jumprelu``;
- ``relu``: a ReLU, trained with an L1 penalty on ``f`` weighted by each decoder row's norm
  (SAELens's ``standard``).

Files (:meth:`SparseAutoencoder.save`, :func:`load_sae`): a folder with ``cfg.json`` and
``sae_weights.safetensors`` (``W_enc`` ``(d_in, d_sae)``, ``b_enc`` ``(d_sae,)``,
``W_dec`` ``(d_sae, d_in)``, ``b_dec`` ``(d_in,)``, and ``threshold`` ``(d_sae,)`` for
``jumprelu``), SAELens's names, shapes and config fields. The input scale used in training
(tokens scaled so that their mean norm is ``sqrt(d_in)``) is folded into the saved weights,
so the files take the site's raw activations; the factor is recorded in the config's
``metadata``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from interp.errors import CacheError, ConfigError

__all__ = ["ARCHITECTURES", "SparseAutoencoder", "load_sae", "SAE_CONFIG", "SAE_WEIGHTS"]

ARCHITECTURES = ("topk", "batchtopk", "relu")
SAE_CONFIG, SAE_WEIGHTS = "cfg.json", "sae_weights.safetensors"
# The architecture SAELens names for each of ours, at inference.
_SAELENS_NAMES = {"topk": "topk", "batchtopk": "jumprelu", "relu": "standard"}


class SparseAutoencoder(nn.Module):
    """One SAE: ``d_in`` -> ``d_sae`` features -> ``d_in``; decoder rows kept at unit norm
    in training (:meth:`normalize_decoder`)."""

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        architecture: str = "topk",
        k: int = 32,
        *,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise ConfigError(
                f"architecture must be one of {', '.join(ARCHITECTURES)}, got {architecture!r}"
            )
        if architecture != "relu" and not 1 <= k <= d_sae:
            raise ConfigError(f"k must lie in [1, {d_sae}] (the features), got {k}")
        self.architecture, self.k = architecture, k
        generator = torch.Generator().manual_seed(seed)
        decoder = torch.randn(d_sae, d_in, generator=generator)  # (d_sae, d_in)
        decoder /= decoder.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(decoder)
        self.W_enc = nn.Parameter(decoder.T.clone())  # (d_in, d_sae): tied at the start
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        # batchtopk at inference: a JumpReLU at this threshold (a running estimate)
        self.register_buffer("threshold", torch.zeros(d_sae))
        self.metadata: dict[str, Any] = {}

    @property
    def d_in(self) -> int:
        return self.W_dec.shape[1]

    @property
    def d_sae(self) -> int:
        return self.W_dec.shape[0]

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """``(tokens, d_in)`` -> ``(tokens, d_sae)``."""
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def encode(self, x: torch.Tensor, *, batch: bool = False) -> torch.Tensor:
        """Sparse features ``(tokens, d_sae)`` of ``x`` ``(tokens, d_in)``; ``batch``: the
        batchtopk selection over the whole batch (training) instead of its threshold."""
        return self.activate(self.pre_activations(x), batch=batch)

    def activate(self, pre: torch.Tensor, *, batch: bool = False) -> torch.Tensor:
        """The architecture's activation of pre-activations ``(tokens, d_sae)``."""
        if self.architecture == "relu":
            return torch.relu(pre)
        if self.architecture == "batchtopk":
            if batch:
                kept = torch.relu(pre).flatten()
                top = torch.topk(kept, min(self.k * len(pre), kept.numel()))
                out = torch.zeros_like(kept).scatter(0, top.indices, top.values)
                return out.view_as(pre)
            return pre * (pre > self.threshold)
        top = torch.topk(pre, self.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        """``(tokens, d_sae)`` -> ``(tokens, d_in)``."""
        return features @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Every decoder row (a feature's direction) back to unit norm."""
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)

    @torch.no_grad()
    def fold_scale(self, scale: float) -> None:
        """Take raw inputs where training scaled them by ``scale``: the same features,
        the reconstruction in raw units (SAELens's folding of a norm scaling factor)."""
        self.W_enc *= scale
        self.W_dec /= scale
        self.b_dec /= scale
        self.metadata["input_scale_folded"] = float(scale)

    def saelens_config(self) -> dict[str, Any]:
        """``cfg.json``: SAELens's fields for this architecture, and our metadata."""
        config: dict[str, Any] = {
            "architecture": _SAELENS_NAMES[self.architecture],
            "d_in": self.d_in,
            "d_sae": self.d_sae,
            "dtype": "float32",
            "device": "cpu",
            "apply_b_dec_to_input": True,
            "normalize_activations": "none",
            "reshape_activations": "none",
            "metadata": {**self.metadata, "vlm_interp_architecture": self.architecture},
        }
        if self.architecture == "topk":
            config |= {"k": self.k, "rescale_acts_by_decoder_norm": False}
        if self.architecture == "batchtopk":
            config["metadata"]["k"] = self.k
        return config

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``cfg.json`` and ``sae_weights.safetensors`` into ``folder``."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        weights = {
            "W_enc": self.W_enc.detach().contiguous(),
            "b_enc": self.b_enc.detach().contiguous(),
            "W_dec": self.W_dec.detach().contiguous(),
            "b_dec": self.b_dec.detach().contiguous(),
        }
        if self.architecture == "batchtopk":
            weights["threshold"] = self.threshold.detach().contiguous()
        save_file({k: v.float().cpu() for k, v in weights.items()}, str(folder / SAE_WEIGHTS))
        (folder / SAE_CONFIG).write_text(json.dumps(self.saelens_config(), indent=1))
        return folder


def load_sae(folder: str | os.PathLike) -> SparseAutoencoder:
    """An SAE from a folder in SAELens's format (ours, or one SAELens wrote: ``standard``,
    ``topk`` or ``jumprelu``)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / SAE_CONFIG).is_file() or not (folder / SAE_WEIGHTS).is_file():
        raise CacheError(
            f"{str(folder)!r} holds no SAE: expected {SAE_CONFIG} and {SAE_WEIGHTS} (the "
            f"format SAELens and interp sae train write)"
        )
    config = json.loads((folder / SAE_CONFIG).read_text())
    weights = load_file(str(folder / SAE_WEIGHTS))
    name = config.get("architecture", "standard")
    ours = {"standard": "relu", "topk": "topk", "jumprelu": "batchtopk"}
    if name not in ours:
        raise CacheError(
            f"{str(folder)!r} holds an SAE of architecture {name!r}; this toolkit reads "
            f"{', '.join(ours)}"
        )
    if config.get("normalize_activations", "none") != "none":
        raise CacheError(
            f"{str(folder)!r} normalises its inputs at run time "
            f"({config['normalize_activations']!r}); fold the scaling into its weights first"
        )
    metadata = dict(config.get("metadata") or {})
    k = int(config.get("k", metadata.get("k", 1)))
    d_in, d_sae = int(config["d_in"]), int(config["d_sae"])
    sae = SparseAutoencoder(d_in, d_sae, ours[name], k=max(1, min(k, d_sae)))
    with torch.no_grad():
        for key in ("W_enc", "b_enc", "W_dec", "b_dec"):
            getattr(sae, key).copy_(weights[key].float())
        if "threshold" in weights:
            sae.threshold.copy_(weights["threshold"].float())
    if not config.get("apply_b_dec_to_input", True):  # pre = x @ W_enc + b_enc: fold b_dec in
        with torch.no_grad():
            sae.b_enc += sae.b_dec @ sae.W_enc
    sae.metadata = {k: v for k, v in metadata.items() if k != "vlm_interp_architecture"}
    return sae
