"""Stage 7b — projector: adapter width → the LLM's hidden size (a 2-layer MLP, as in LLaVA)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class ProjectorConfig:
    in_dim: int = 1024  # adapter / CLIP width
    out_dim: int = 1024  # LLM hidden size
    hidden: int = 0  # 0 → out_dim


class Projector(nn.Module):
    def __init__(self, cfg: ProjectorConfig):
        super().__init__()
        h = cfg.hidden or cfg.out_dim
        self.net = nn.Sequential(nn.Linear(cfg.in_dim, h), nn.GELU(), nn.Linear(h, cfg.out_dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.net(tokens)  # (B, T, Din) -> (B, T, H)
