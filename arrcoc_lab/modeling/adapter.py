"""Stage 7 — quality adapter: variable-quality tokens → the distribution the LLM expects.

A 1-token "gist" of a whole cell and a full-resolution patch token carry very different
statistics. The adapter scores each token's quality, adds a level embedding, runs a small
transformer normaliser over the set, and blends normalised and raw tokens through a learned gate.
Optionally (Ovis-style) the result is re-expressed as a probabilistic mixture over a learned
visual embedding table: softmax(head(x)) @ VET.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class AdapterConfig:
    dim: int = 1024  # token width (CLIP width)
    n_levels: int = 4  # LOD levels
    layers: int = 1  # normaliser transformer layers
    heads: int = 8  # normaliser attention heads
    gate_init: float = 0.0  # logit of the gate between raw and normalised tokens (0 → 0.5)
    vet_size: int = 0  # >0: Ovis-style probabilistic visual embedding table with this many entries


@dataclass
class AdapterOutput:
    tokens: torch.Tensor  # (B, T, D) normalised tokens, zero at padding
    quality: torch.Tensor  # (B, T) per-token quality score in [0, 1]
    gate: torch.Tensor  # () weight of the normalised branch


class QualityAdapter(nn.Module):
    def __init__(self, cfg: AdapterConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.quality_head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 1))
        self.level_embed = nn.Embedding(cfg.n_levels, d)
        self.quality_embed = nn.Parameter(torch.zeros(d))
        layer = nn.TransformerEncoderLayer(d, cfg.heads, 4 * d, dropout=0.0, batch_first=True, norm_first=True,
                                           activation="gelu")
        self.normaliser = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.out_norm = nn.LayerNorm(d)
        self.gate_logit = nn.Parameter(torch.tensor(float(cfg.gate_init)))
        if cfg.vet_size:
            self.vet_head = nn.Linear(d, cfg.vet_size)
            self.vet = nn.Parameter(torch.randn(cfg.vet_size, d) * d**-0.5)

    def forward(self, tokens: torch.Tensor, levels: torch.Tensor, mask: torch.Tensor) -> AdapterOutput:
        quality = torch.sigmoid(self.quality_head(tokens)).squeeze(-1)  # (B, T)
        h = tokens + self.level_embed(levels) + quality.unsqueeze(-1) * self.quality_embed
        h = self.out_norm(self.normaliser(h, src_key_padding_mask=~mask))  # (B, T, D)
        gate = torch.sigmoid(self.gate_logit)
        out = tokens + gate * (h - tokens)
        if self.cfg.vet_size:
            probs = torch.softmax(self.vet_head(out), -1)  # (B, T, V)
            out = probs @ self.vet  # (B, T, V) @ (V, D) -> (B, T, D)
        return AdapterOutput(tokens=out * mask.unsqueeze(-1), quality=quality * mask, gate=gate)
