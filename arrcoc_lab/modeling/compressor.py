"""Stage 5 — compressor: patch features F + per-cell LOD levels → a variable-length token set.

Each level k is a pyramid layer: F pooled with stride s_k = cell_patches / sqrt(levels[k]) patches,
so a cell at level k contributes levels[k] tokens. Plain average pooling erases fine detail (a
14–18 px digit is unreadable from 2×2- or 4×4-pooled features), so each level also has a learned
head — a strided s×s convolution that sees every patch of the block and decides what the token
carries. Every token keeps its centre position (for CLIP's positional embedding) and its level.

All levels are computed for the whole map (cheap next to SAM) and the tokens each cell asked for
are gathered into one padded batch, cell-major or in raster order of their centres (`order`). Only
the LLM sees the order (CLIP and the adapter are permutation-equivariant): under a 1-D RoPE, raster
order keeps a line of text contiguous across cell borders, where cell-major order breaks it every
`cell_patches` tokens and puts a vertical neighbour at a distance that depends on other cells' levels.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .geometry import Geometry


@dataclass
class CompressorConfig:
    in_dim: int = 256  # SAM feature channels
    dim: int = 1024  # token width handed to CLIP
    learned_heads: bool = True  # add a strided-conv head per level to the average pooling
    order: str = "cell"  # token order in the set: "cell" (cell by cell) or "raster" (by centre, row by row)


ORDERS = ("cell", "raster")


@dataclass
class TokenSet:
    tokens: torch.Tensor  # (B, T, D) padded token set
    mask: torch.Tensor  # (B, T) bool, True at real tokens
    positions: torch.Tensor  # (B, T, 2) token centre (y, x) in [0, 1] image coordinates
    levels: torch.Tensor  # (B, T) long, LOD level index of each token (0 at padding)
    cells: torch.Tensor  # (B, T) long, raster index of the token's cell (-1 at padding)

    @property
    def lengths(self) -> torch.Tensor:
        return self.mask.sum(1)


class Compressor(nn.Module):
    def __init__(self, cfg: CompressorConfig, geometry: Geometry):
        super().__init__()
        self.cfg, self.geometry = cfg, geometry
        strides = [geometry.level_stride(k) for k in range(len(geometry.levels))]
        self.strides = strides
        self.pool_proj = nn.ModuleList(nn.Conv2d(cfg.in_dim, cfg.dim, 1) for _ in strides)
        self.heads = nn.ModuleList(
            nn.Conv2d(cfg.in_dim, cfg.dim, s, stride=s) if cfg.learned_heads else nn.Identity() for s in strides
        )
        if cfg.learned_heads:
            for h in self.heads:
                nn.init.zeros_(h.weight)  # start as plain pooling; training decides what heads add
                nn.init.zeros_(h.bias)
        self._register_layout()

    def _register_layout(self) -> None:
        """Buffers of the token layout: each pyramid token's (cell, level), centre and place in the set."""
        if self.cfg.order not in ORDERS:
            raise InputError(f"unknown compressor token order {self.cfg.order!r}; known: {', '.join(ORDERS)}")
        self.register_buffer("_layout", self._build_layout(), persistent=False)
        self.register_buffer("_positions", self._centres(), persistent=False)
        self.register_buffer("_rank", self._ranks(self.cfg.order), persistent=False)

    def forward(self, features: torch.Tensor, levels: torch.Tensor, level_weights: torch.Tensor | None = None) -> TokenSet:
        """features (B, C, Hp, Wp), levels (B, Hc, Wc) long → TokenSet. level_weights (B, Hc, Wc, L),
        if given, scale each token by its cell's weight for its level (straight-through training)."""
        B = features.shape[0]
        pyramid = self.pyramid(features)  # (B, A, D): every token of every level, cell-major
        cell, level = self._layout.unbind(-1)  # (A,) each
        cell, level = cell.long(), level.long()
        chosen = levels.flatten(1)[:, cell] == level  # (B, A) which tokens the allocation keeps
        if level_weights is not None:
            w = level_weights.flatten(1, 2)[:, cell, level]  # (B, A)
            pyramid = pyramid * w.unsqueeze(-1)
        T = int(chosen.sum(1).max())
        key = (~chosen).long() * len(self._rank) + self._rank  # (B, A): kept tokens first, each by its rank
        order = torch.argsort(key, dim=1)[:, :T]  # (B, A) -> (B, T)
        take = lambda x: torch.gather(x, 1, order.view(B, T, *([1] * (x.dim() - 2))).expand(B, T, *x.shape[2:]))
        mask = take(chosen)
        positions = self._positions.to(features.dtype).unsqueeze(0).expand(B, -1, -1)  # (A, 2) -> (B, A, 2)
        tokens = take(pyramid) * mask.unsqueeze(-1)  # (B, A, D) -> (B, T, D)
        return TokenSet(
            tokens=tokens,
            mask=mask,
            positions=take(positions),
            levels=take(level.unsqueeze(0).expand(B, -1)) * mask,
            cells=torch.where(mask, take(cell.unsqueeze(0).expand(B, -1)), -1),
        )

    def pyramid(self, features: torch.Tensor) -> torch.Tensor:
        """All levels' tokens, (B, A, D) with A = n_cells · Σ levels, in cell-major order."""
        B = features.shape[0]
        n = self.geometry.cells_per_side
        per_level = []
        for k, s in enumerate(self.strides):
            x = self.pool_proj[k](F.avg_pool2d(features, s) if s > 1 else features)  # (B, D, Hp/s, Wp/s)
            if self.cfg.learned_heads:
                x = x + self.heads[k](features)
            g = self.geometry.level_side(k)
            x = x.view(B, -1, n, g, n, g).permute(0, 2, 4, 3, 5, 1)  # (B, D, n·g, n·g) -> (B, n, n, g, g, D)
            per_level.append(x.reshape(B, n * n, g * g, -1))  # (B, cells, g², D)
        return torch.cat(per_level, 2).flatten(1, 2)  # (B, cells, Σg², D) -> (B, A, D)

    def _build_layout(self) -> torch.Tensor:
        """(A, 2) rows of (cell index, level index) matching `pyramid`'s order."""
        rows = []
        for c in range(self.geometry.n_cells):
            for k in range(len(self.geometry.levels)):
                rows += [(c, k)] * self.geometry.levels[k]
        return torch.tensor(rows, dtype=torch.float32)

    def _ranks(self, order: str) -> torch.Tensor:
        """(A,) long: each pyramid token's place in the token set (ties between levels cannot occur
        within one allocation, since a cell keeps one level)."""
        A = len(self._layout)
        if order == "cell":
            return torch.arange(A)
        raster = raster_order(self._positions)
        return torch.empty(A, dtype=torch.long).index_put_((raster,), torch.arange(A))

    def _centres(self) -> torch.Tensor:
        """(A, 2) centre (y, x) in [0, 1] of every pyramid token, in `pyramid`'s order."""
        n = self.geometry.cells_per_side
        out = []
        for c in range(self.geometry.n_cells):
            cy, cx = divmod(c, n)
            for k in range(len(self.geometry.levels)):
                g = self.geometry.level_side(k)
                sub = (torch.arange(g, dtype=torch.float32) + 0.5) / g
                yy, xx = torch.meshgrid((cy + sub) / n, (cx + sub) / n, indexing="ij")
                out.append(torch.stack([yy.flatten(), xx.flatten()], -1))
        return torch.cat(out)


def raster_order(centres: torch.Tensor) -> torch.Tensor:
    """(T,) indices sorting tokens by their centre (y, x) (T, 2): row by row, left to right."""
    by_x = torch.sort(centres[:, 1], stable=True).indices
    return by_x[torch.sort(centres[by_x, 0], stable=True).indices]
