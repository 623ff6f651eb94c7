"""Stage 3 — relevance analyzer: patch features + query → relevance per patch and per cell.

Five signals, as the seeds list them:
  query relevance   cross-attention of every patch to the query tokens, scored by a small head;
  hotspot           a conv head on the features: visual salience, query-independent;
  entropy           Shannon entropy of each cell's grey-level histogram, from the pixels (no weights);
  symbol            a conv head for "text/symbol-likeness";
  global context    learned global tokens that read the whole image, plus a per-cell role prior.
They are fused as the seeds weight them (0.3 entropy + 0.2 symbol + 0.5 query, learnable) and then
blended with the context signal (hotspot + role prior + global tokens) through a learned gate.
Every signal is in [0, 1], and so is every blend of them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .geometry import Geometry
from .query_encoder import QueryEncoding


@dataclass
class RelevanceConfig:
    in_dim: int = 256  # channels of the SAM features
    query_dim: int = 384  # width of the query encoder's tokens
    dim: int = 128  # analyzer width
    heads: int = 4  # cross-attention heads
    n_global: int = 4  # learned global context tokens
    entropy_bins: int = 16  # grey-level histogram bins for the Shannon entropy
    mix_init: tuple[float, float, float] = (0.3, 0.2, 0.5)  # entropy, symbol, query weights (seeds)
    gate_init: float = -2.0  # logit of the context gate at init (sigmoid(-2) ≈ 0.12)


@dataclass
class RelevanceOutput:
    patch: torch.Tensor  # (B, Hp, Wp) fused relevance in [0, 1]
    cell: torch.Tensor  # (B, Hc, Wc) relevance per cell in [0, 1]
    cell_logit: torch.Tensor  # (B, Hc, Wc) logit of `cell`, for training and for allocation
    query: torch.Tensor  # (B, Hp, Wp) query-relevance signal in [0, 1]
    hotspot: torch.Tensor  # (B, Hp, Wp) visual salience in [0, 1]
    symbol: torch.Tensor  # (B, Hp, Wp) text/symbol-likeness in [0, 1]
    entropy: torch.Tensor  # (B, Hc, Wc) normalised pixel entropy per cell in [0, 1]
    gate: torch.Tensor  # (B,) weight of the context signal in the blend
    mix: torch.Tensor  # (3,) current entropy/symbol/query weights


class RelevanceAnalyzer(nn.Module):
    def __init__(self, cfg: RelevanceConfig, geometry: Geometry):
        super().__init__()
        self.cfg, self.geometry = cfg, geometry
        d, n = cfg.dim, geometry.cells_per_side
        self.patch_proj = nn.Conv2d(cfg.in_dim, d, 3, padding=1)
        self.pos = nn.Parameter(torch.zeros(1, d, geometry.patches_per_side, geometry.patches_per_side))
        self.query_proj = nn.Linear(cfg.query_dim, d)
        self.cross_attn = nn.MultiheadAttention(d, cfg.heads, batch_first=True)
        self.query_head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.GELU(), nn.Linear(d, 1))
        self.hotspot_head = _conv_head(cfg.in_dim, d)
        self.symbol_head = _conv_head(cfg.in_dim, d)
        self.global_tokens = nn.Parameter(torch.randn(cfg.n_global, d) * d**-0.5)
        self.global_attn = nn.MultiheadAttention(d, cfg.heads, batch_first=True)
        self.role_prior = nn.Parameter(torch.zeros(n, n))  # per-cell logit: where answers tend to be
        self.gate_head = nn.Linear(2 * d, 1)
        nn.init.zeros_(self.gate_head.weight)
        nn.init.constant_(self.gate_head.bias, cfg.gate_init)
        self.mix_logits = nn.Parameter(torch.tensor(cfg.mix_init).log())
        nn.init.trunc_normal_(self.pos, std=0.02)

    def forward(self, features: torch.Tensor, query: QueryEncoding, pixels: torch.Tensor) -> RelevanceOutput:
        B, _, Hp, Wp = features.shape
        patches = self.embed_patches(features)  # (B, N, D)
        q_score = self.query_relevance(patches, query).view(B, Hp, Wp)
        hotspot = torch.sigmoid(self.hotspot_head(features)).squeeze(1)  # (B, Hp, Wp)
        symbol = torch.sigmoid(self.symbol_head(features)).squeeze(1)  # (B, Hp, Wp)
        entropy = cell_entropy(pixels, self.geometry.cells_per_side, self.cfg.entropy_bins)  # (B, Hc, Wc)
        context, gate = self.global_context(patches, query, hotspot)
        mix = torch.softmax(self.mix_logits, 0)
        base = mix[0] * self.to_patches(entropy) + mix[1] * symbol + mix[2] * q_score
        patch = (1 - gate.view(B, 1, 1)) * base + gate.view(B, 1, 1) * context  # (B, Hp, Wp)
        cell = self.to_cells(patch)
        return RelevanceOutput(patch=patch, cell=cell, cell_logit=torch.logit(cell.clamp(1e-4, 1 - 1e-4)),
                               query=q_score, hotspot=hotspot, symbol=symbol, entropy=entropy, gate=gate, mix=mix)

    def embed_patches(self, features: torch.Tensor) -> torch.Tensor:
        x = self.patch_proj(features) + self.pos  # (B, D, Hp, Wp)
        return x.flatten(2).transpose(1, 2)  # (B, D, Hp, Wp) -> (B, N, D)

    def query_relevance(self, patches: torch.Tensor, query: QueryEncoding) -> torch.Tensor:
        """Each patch attends to the question's tokens; the head scores patch × attended query."""
        q = self.query_proj(query.tokens.to(patches.dtype))  # (B, L, D)
        attended, _ = self.cross_attn(patches, q, q, key_padding_mask=~query.mask, need_weights=False)  # (B, N, D)
        return torch.sigmoid(self.query_head(patches * attended)).squeeze(-1)  # (B, N)

    def global_context(self, patches, query: QueryEncoding, hotspot):
        """Global tokens summarise the image; with the query summary they set the gate, and their
        similarity to each patch plus the role prior and the hotspot form the context signal."""
        B, N, D = patches.shape
        g = self.global_tokens.unsqueeze(0).expand(B, -1, -1)  # (G, D) -> (B, G, D)
        g, _ = self.global_attn(g, patches, patches, need_weights=False)  # (B, G, D)
        q_sum = self.query_proj(query.pooled.to(patches.dtype))  # (B, D)
        gate = torch.sigmoid(self.gate_head(torch.cat([g.mean(1), q_sum], -1))).squeeze(-1)  # (B,)
        sim = torch.einsum("bnd,bgd->bng", patches, g).amax(-1) / math.sqrt(D)  # (B, N)
        side = self.geometry.patches_per_side
        role = self.to_patches(self.role_prior.expand(B, -1, -1))  # (B, Hp, Wp)
        logit = sim.view(B, side, side) + role + torch.logit(hotspot.clamp(1e-4, 1 - 1e-4))
        return torch.sigmoid(logit), gate

    def to_cells(self, patch: torch.Tensor) -> torch.Tensor:
        """Cell relevance = mean of (average, max) over its patches: a small sign lights its cell."""
        k = self.geometry.cell_patches
        x = patch.unsqueeze(1)  # (B, Hp, Wp) -> (B, 1, Hp, Wp)
        return (0.5 * (F.avg_pool2d(x, k) + F.max_pool2d(x, k))).squeeze(1)  # (B, Hc, Wc)

    def to_patches(self, cell: torch.Tensor) -> torch.Tensor:
        k = self.geometry.cell_patches
        return cell.repeat_interleave(k, -2).repeat_interleave(k, -1)  # (B, Hc, Wc) -> (B, Hp, Wp)


def _conv_head(in_dim: int, dim: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_dim, dim, 3, padding=1), nn.GELU(), nn.Conv2d(dim, 1, 1))


@torch.no_grad()
def cell_entropy(pixels: torch.Tensor, cells: int, bins: int = 16) -> torch.Tensor:
    """Shannon entropy of each cell's grey-level histogram, normalised to [0, 1] by log(bins).
    pixels (B, 3, H, W) in [0, 255] → (B, cells, cells). Blank sky ≈ 0, dense text ≈ high."""
    grey = pixels.float().mean(1, keepdim=True)  # (B, 1, H, W)
    idx = (grey / 256 * bins).long().clamp(0, bins - 1)
    onehot = torch.zeros(grey.shape[0], bins, *grey.shape[-2:], device=pixels.device)
    onehot.scatter_(1, idx, 1.0)  # (B, bins, H, W)
    hist = F.adaptive_avg_pool2d(onehot, cells)  # (B, bins, Hc, Wc): probabilities per cell
    ent = -(hist * hist.clamp(min=1e-12).log()).sum(1)  # (B, Hc, Wc)
    return ent / math.log(bins)
