"""The planners: policies that choose a per-cell utility map and a budget, which the allocator's
knapsack turns into LOD levels (docs/ARCHITECTURE.md, "The allocation solver") — from no compression (`full`) to the learned
relevance (`arrcoc`), plus `oracle`, the training-time planner that follows a given utility map
(phase 0's randomised and region-label allocations)."""
from __future__ import annotations

import re

import numpy as np
import torch
import torch.nn.functional as F

from ..modeling.allocator import TIERS, AllocationContext, AllocatorConfig, Policy
from ..modeling.geometry import Geometry


def _cells(ctx: AllocationContext) -> torch.Tensor:
    """A (B, Hc, Wc) zero map on the features' device: the shape every utility map has."""
    n = ctx.geometry.cells_per_side
    return torch.zeros(ctx.batch_size, n, n, device=ctx.features.device)


class FullPolicy(Policy):
    reads_relevance = False
    name, cite = "full", "No compression: every cell at the top level (the NaViT / Ovis native-resolution end)."

    def default_budget(self, geometry, cfg):
        return geometry.max_tokens

    def plan(self, ctx, budgets, allocator):
        n = len(budgets)
        return torch.ones_like(_cells(ctx)), [allocator.geometry.max_tokens] * n, [None] * n


class UniformPolicy(Policy):
    reads_relevance = False
    name, cite = "uniform", "Fixed compression everywhere (DeepSeek-OCR's 16x Base mode at the uniform budget)."

    def default_budget(self, geometry, cfg):
        return geometry.uniform_budget

    def plan(self, ctx, budgets, allocator):
        # equal utility; a tiny centre-out tie-break spreads leftover tokens symmetrically
        cells = _cells(ctx)
        u = torch.ones_like(cells) + 1e-6 * _centre_weight(cells)
        return u, budgets, [None] * len(budgets)


class RandomPolicy(Policy):
    reads_relevance = False
    name, cite = "random", "Random token pruning at the same budget (a strong baseline in recent pruning studies)."

    def default_budget(self, geometry, cfg):
        return geometry.uniform_budget

    def plan(self, ctx, budgets, allocator):
        cells = _cells(ctx)
        maps = [torch.from_numpy(np.random.default_rng([allocator.cfg.seed, seed]).random(cells.shape[1:]))
                for seed in (ctx.seeds or range(len(budgets)))]
        return torch.stack(maps).to(cells), budgets, [None] * len(budgets)


class TierPolicy(Policy):
    """Tier policies choose their own budget; the caller's budget only caps it."""

    def default_budget(self, geometry, cfg):
        return geometry.max_tokens


class HeuristicPolicy(TierPolicy):
    name, cite = "heuristic", "Seeds' V1: rule-based query complexity -> tier; entropy + edge density -> where. No training."

    def plan(self, ctx, budgets, allocator):
        tiers = [rule_tier(q, allocator.cfg) for q in ctx.questions]
        return content_utility(ctx), _tier_budgets(tiers, budgets, allocator.geometry), tiers


class LearnedTierPolicy(TierPolicy):
    name, cite = "learned-tier", "Seeds' V2: a small classifier picks the budget tier from query + image summary; content heuristics -> where."

    def plan(self, ctx, budgets, allocator):
        logits = allocator.tier_classifier(ctx.query.pooled, ctx.features)  # (B, 3)
        tiers = [TIERS[i] for i in logits.argmax(-1).tolist()]
        return content_utility(ctx), _tier_budgets(tiers, budgets, allocator.geometry), tiers


class ArrcocPolicy(Policy):
    name, cite = "arrcoc", "Seeds' V3: the learned relevance analyzer's per-cell relevance, solved under the budget."

    def plan(self, ctx, budgets, allocator):
        return ctx.relevance.cell, budgets, [None] * len(budgets)

class OraclePolicy(Policy):
    """Training only (not in the registry): follows the utility map it is given — region-label
    oracles, random maps, uniform — at per-sample budgets, or levels given outright (reading
    views); phase 0 teaches the downstream to read whatever allocation a policy may produce."""

    name, cite = "oracle", "Training: a given per-cell utility map (region labels, random, uniform), solved under the budget."
    reads_relevance = False

    def __init__(self, utility: torch.Tensor, levels: torch.Tensor | None = None):
        self.utility = utility  # (B, Hc, Wc)
        self.levels = levels  # (B, Hc, Wc) long, or None: solve the knapsack on `utility`

    def plan(self, ctx, budgets, allocator):
        return self.utility.to(ctx.features.device), budgets, [None] * len(budgets)

    def fixed_levels(self, ctx):
        return self.levels


def rule_tier(question: str, cfg: AllocatorConfig) -> str:
    q = question.lower()
    if any(re.search(rf"\b{re.escape(w)}", q) for w in cfg.hard_words):
        return "accurate"
    if any(re.search(rf"\b{re.escape(w)}", q) for w in cfg.easy_words):
        return "fast"
    return "balanced"


def _tier_budgets(tiers: list[str], caps: list[int], geometry: Geometry) -> list[int]:
    """A tier policy spends its tier's budget, never more than the caller's budget."""
    return [min(geometry.budget_for_mode(t), cap) for t, cap in zip(tiers, caps)]


def content_utility(ctx: AllocationContext) -> torch.Tensor:
    """Seeds' V1 "where": half pixel entropy, half edge density (Sobel), per cell, in [0, 1]."""
    grey = ctx.pixels.float().mean(1, keepdim=True) / 255  # (B, 1, S, S)
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], device=grey.device).view(1, 1, 3, 3)
    edges = torch.sqrt(F.conv2d(grey, kx, padding=1) ** 2 + F.conv2d(grey, kx.transpose(-1, -2), padding=1) ** 2)
    cells = ctx.relevance.entropy.shape[-1]
    edge = F.adaptive_avg_pool2d(edges, cells).squeeze(1)  # (B, Hc, Wc)
    edge = edge / edge.flatten(1).amax(1).clamp(min=1e-6).view(-1, 1, 1)
    return 0.5 * ctx.relevance.entropy + 0.5 * edge


def _centre_weight(like: torch.Tensor) -> torch.Tensor:
    h, w = like.shape[-2:]
    ys = torch.linspace(-1, 1, h, device=like.device).view(h, 1)
    xs = torch.linspace(-1, 1, w, device=like.device).view(1, w)
    return (2 - ys.abs() - xs.abs()).expand_as(like)
