"""Stage 4 — allocator: relevance + budget → LOD level (tokens) per cell.

Every policy reduces to a per-cell utility map and a total budget; one solver turns those into
levels. The solver is a multiple-choice knapsack (each cell picks one LOD level, the token costs
add up to at most the budget), solved greedily by marginal utility per token:

  utility(cell, level) = u_cell · tokens(level) ** exponent      (concave: diminishing returns)

Start every cell at the minimum level and repeatedly apply the upgrade with the best
Δutility/Δtokens that still fits. With the smoothness constraint (neighbours differ by at most
`max_level_step` levels) an upgrade that would break it is taken as a compound move that also
raises the neighbours as far as needed, so the constraint holds after every step.

Where greedy is optimal: without the smoothness constraint the per-cell utility is concave in
tokens, so each cell's incremental efficiencies decrease and greedy visits upgrades in the order
of the LP relaxation of the multiple-choice knapsack. Whenever greedy stops with the budget spent
exactly, its solution equals the LP optimum and is therefore optimal for the integer problem
(tests/test_allocator.py checks this against brute force); otherwise it is within one upgrade's
utility of optimal. It always stops with less budget left than the cheapest feasible upgrade
("used to within one LOD step") and never exceeds the budget.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import InputError
from .geometry import Geometry
from .query_encoder import QueryEncoding
from .relevance import RelevanceOutput

TIERS = ("fast", "balanced", "accurate")


@dataclass
class AllocatorConfig:
    utility_exponent: float = 0.5  # utility ∝ tokens**exponent; <1 spreads, 1 fills the top cell first
    default_budget_mode: str = "balanced"  # quality mode used when budget=None for budget policies
    feature_dim: int = 256  # SAM feature channels (image summary for the learned-tier classifier)
    query_dim: int = 384  # pooled query width (learned-tier classifier)
    tier_hidden: int = 64  # learned-tier classifier width
    hard_words: tuple[str, ...] = (  # heuristic: questions that need fine detail
        "formula", "code", "read", "number", "text", "date", "revenue", "written", "say", "title",
        "extract", "digit", "value", "price", "equation", "write", "label", "q1", "q2", "q3", "q4")
    easy_words: tuple[str, ...] = (  # heuristic: questions answerable from the gist
        "city", "colour", "color", "how many", "sky", "landmark", "kind", "is there", "what type", "count")
    seed: int = 0  # base seed of the random policy


@dataclass
class AllocationContext:
    relevance: RelevanceOutput  # stage 3 output
    query: QueryEncoding  # stage 2 output
    questions: list[str]  # raw question texts (rule-based policies read them)
    pixels: torch.Tensor  # (B, 3, S, S) in [0, 255]
    features: torch.Tensor  # (B, C, Hp, Wp) SAM features
    seeds: list[int] = field(default_factory=list)  # per-sample seeds for stochastic policies
    model: Any = None  # the ARRCOC model: token-level policies may score with a later stage (FastV: the LLM)


@dataclass
class Allocation:
    levels: torch.Tensor  # (B, Hc, Wc) long: LOD level index per cell
    tokens_per_cell: torch.Tensor  # (B, Hc, Wc) long
    num_tokens: torch.Tensor  # (B,) long
    budgets: list[int]  # the budget each sample was solved under
    utility: torch.Tensor  # (B, Hc, Wc) the per-cell utility the solver used
    tiers: list[str | None]  # tier picked by tier policies, else None
    policy: str


# ---------------------------------------------------------------------------------- solver
def solve_knapsack(utility: np.ndarray, geometry: Geometry, budget: int, exponent: float = 0.5,
                   max_step: int | None = None) -> np.ndarray:
    """Greedy multiple-choice knapsack. utility (Hc, Wc) ≥ 0 → level index per cell (Hc, Wc)."""
    hc, wc = utility.shape
    tokens = np.asarray(geometry.levels, dtype=np.int64)
    value = tokens.astype(np.float64) ** exponent
    lo, hi = geometry.min_level, geometry.max_level_index
    step = geometry.max_level_step if max_step is None else max_step
    r = np.clip(np.nan_to_num(utility.astype(np.float64).ravel()), 0, None)
    dist = _grid_distance(hc, wc)  # (n, n) Manhattan distance between cells
    cur = np.full(r.size, lo, dtype=np.int64)
    spent = int(tokens[cur].sum())
    if spent > budget:
        raise InputError(f"budget {budget} is below the minimum of {spent} tokens")
    while True:
        target = cur + 1  # (n,) each row: raise cell i by one level
        new = np.maximum(cur[None, :], target[:, None] - step * dist)  # (n, n) compound moves
        new = np.minimum(new, hi)
        cost = tokens[new].sum(1) - spent  # (n,)
        gain = (r[None, :] * (value[new] - value[cur][None, :])).sum(1)
        ok = (target <= hi) & (cost > 0) & (cost <= budget - spent)
        if not ok.any():
            return cur.reshape(hc, wc)
        eff = np.where(ok, gain / np.maximum(cost, 1), -np.inf)
        best = int(np.argmax(eff))
        cur, spent = new[best], spent + int(cost[best])


def _grid_distance(h: int, w: int) -> np.ndarray:
    ys, xs = np.divmod(np.arange(h * w), w)
    return np.abs(ys[:, None] - ys[None, :]) + np.abs(xs[:, None] - xs[None, :])


def gumbel_levels(logits: torch.Tensor, tau: float = 1.0, hard: bool = True, generator=None) -> torch.Tensor:
    """Differentiable level choice for training: Gumbel-softmax over levels (..., L), straight-through
    when hard (one-hot forward, soft gradient). Inference uses the knapsack's hard decisions."""
    u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
    g = -torch.log(-torch.log(u.clamp(1e-9, 1 - 1e-9)))
    soft = torch.softmax((logits + g) / tau, -1)
    if not hard:
        return soft
    onehot = F.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
    return onehot + soft - soft.detach()


# ---------------------------------------------------------------------------------- policies
class Policy:
    """A policy turns the context into (utility map, budget, tier) per sample.

    Token-level policies (`token_level = True`, the literature baselines in baselines.py) do not
    plan per-cell levels: the compressor runs every cell at the top level, and after the stage
    named by `reduce_after` ("compressor" or "clip") the model calls `reduce()`, which must return
    exactly `budgets[i]` tokens for sample i."""

    name = ""
    cite = ""
    token_level = False  # True: select/merge tokens from the full-resolution set instead of planning levels
    reduce_after = "clip"  # token-level: the stage whose output reduce() cuts, "compressor" or "clip"

    def default_budget(self, geometry: Geometry, cfg: AllocatorConfig) -> int:
        return geometry.budget_for_mode(cfg.default_budget_mode)

    def plan(self, ctx: AllocationContext, budgets: list[int], allocator: "Allocator"):
        raise NotImplementedError

    def reduce(self, ctx: AllocationContext, tokens, clip_out, budgets: list[int]):
        """Token-level policies: full-resolution TokenSet (+ ClipOutput when reduce_after == "clip",
        else None) → TokenSet of exactly budgets[i] tokens. After CLIP, the returned tokens are CLIP
        outputs (what the adapter reads next)."""
        raise NotImplementedError(f"policy {self.name!r} is not token-level")


class FullPolicy(Policy):
    name, cite = "full", "No compression: every cell at the top level (the NaViT / Ovis native-resolution end)."

    def default_budget(self, geometry, cfg):
        return geometry.max_tokens

    def plan(self, ctx, budgets, allocator):
        n = len(budgets)
        return torch.ones_like(ctx.relevance.cell), [allocator.geometry.max_tokens] * n, [None] * n


class UniformPolicy(Policy):
    name, cite = "uniform", "Fixed compression everywhere (DeepSeek-OCR's 16x Base mode at the uniform budget)."

    def default_budget(self, geometry, cfg):
        return geometry.uniform_budget

    def plan(self, ctx, budgets, allocator):
        # equal utility; a tiny centre-out tie-break spreads leftover tokens symmetrically
        u = torch.ones_like(ctx.relevance.cell) + 1e-6 * _centre_weight(ctx.relevance.cell)
        return u, budgets, [None] * len(budgets)


class RandomPolicy(Policy):
    name, cite = "random", "Random token pruning at the same budget (a strong baseline in recent pruning studies)."

    def default_budget(self, geometry, cfg):
        return geometry.uniform_budget

    def plan(self, ctx, budgets, allocator):
        maps = []
        for i, seed in enumerate(ctx.seeds or range(len(budgets))):
            rng = np.random.default_rng([allocator.cfg.seed, seed])
            maps.append(torch.from_numpy(rng.random(ctx.relevance.cell.shape[1:])))
        return torch.stack(maps).to(ctx.relevance.cell), budgets, [None] * len(budgets)


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


POLICIES: dict[str, Policy] = {p.name: p for p in (FullPolicy(), UniformPolicy(), RandomPolicy(), HeuristicPolicy(),
                                                    LearnedTierPolicy(), ArrcocPolicy())}


def register_policy(policy: Policy) -> None:
    """Add a policy to the registry (the benchmark's reduction baselines register here)."""
    POLICIES[policy.name] = policy


def get_policy(name: str) -> Policy:
    if name not in POLICIES:
        raise InputError(f"unknown policy {name!r}; known: {sorted(POLICIES)}")
    return POLICIES[name]


class TierClassifier(nn.Module):
    """V2: pooled query + mean image feature → logits over (fast, balanced, accurate)."""

    def __init__(self, cfg: AllocatorConfig):
        super().__init__()
        self.image_proj = nn.Linear(cfg.feature_dim, cfg.tier_hidden)
        self.mlp = nn.Sequential(nn.Linear(cfg.query_dim + cfg.tier_hidden, cfg.tier_hidden), nn.GELU(),
                                 nn.Linear(cfg.tier_hidden, len(TIERS)))

    def forward(self, query_pooled: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        image = self.image_proj(features.mean((-2, -1)))  # (B, C, Hp, Wp) -> (B, C) -> (B, H)
        return self.mlp(torch.cat([query_pooled.to(image.dtype), image], -1))  # (B, 3)


class Allocator(nn.Module):
    """Runs a named policy and the knapsack solver; holds the learned parts of the policies."""

    def __init__(self, cfg: AllocatorConfig, geometry: Geometry):
        super().__init__()
        self.cfg, self.geometry = cfg, geometry
        self.tier_classifier = TierClassifier(cfg)
        n = len(geometry.levels)
        # training-time level head: logits over LOD levels rise with relevance for higher levels
        self.level_scale = nn.Parameter(torch.linspace(-1.5, 1.5, n))
        self.level_bias = nn.Parameter(torch.linspace(1.5, -1.5, n))  # start near the uniform budget, not at max

    def level_logits(self, cell_logit: torch.Tensor) -> torch.Tensor:
        """(B, Hc, Wc) relevance logits → (B, Hc, Wc, L) level logits for Gumbel-softmax training."""
        return cell_logit.unsqueeze(-1) * self.level_scale + self.level_bias

    def resolve_budget(self, policy: str, budget) -> int:
        p = get_policy(policy)
        if budget is None:
            return p.default_budget(self.geometry, self.cfg)
        if isinstance(budget, str):
            budget = self.geometry.budget_for_mode(budget)
        return self.geometry.check_budget(budget)

    @torch.no_grad()
    def forward(self, ctx: AllocationContext, policy: str, budget=None) -> Allocation:
        p = get_policy(policy)
        B = ctx.relevance.cell.shape[0]
        budgets = [self.resolve_budget(policy, budget)] * B
        if p.token_level:
            return self.top_level(ctx, budgets, policy)
        utility, budgets, tiers = p.plan(ctx, budgets, self)
        levels = np.stack([solve_knapsack(u, self.geometry, b, self.cfg.utility_exponent)
                           for u, b in zip(utility.float().cpu().numpy(), budgets)])
        levels = torch.from_numpy(levels).to(ctx.relevance.cell.device)
        tokens = torch.tensor(self.geometry.levels, device=levels.device)[levels]
        return Allocation(levels=levels, tokens_per_cell=tokens, num_tokens=tokens.flatten(1).sum(1),
                          budgets=budgets, utility=utility.float(), tiers=tiers, policy=policy)


    def top_level(self, ctx: AllocationContext, budgets: list[int], policy: str) -> Allocation:
        """Every cell at the top level: what a token-level policy reduces from (its budgets are kept
        for reduce(); the allocation is recounted from the kept tokens by `count_kept`)."""
        cell = ctx.relevance.cell
        levels = torch.full(cell.shape, self.geometry.max_level_index, dtype=torch.long, device=cell.device)
        tokens = torch.full_like(levels, self.geometry.levels[self.geometry.max_level_index])
        return Allocation(levels=levels, tokens_per_cell=tokens, num_tokens=tokens.flatten(1).sum(1),
                          budgets=list(budgets), utility=torch.ones_like(cell, dtype=torch.float),
                          tiers=[None] * len(budgets), policy=policy)

    def count_kept(self, allocation: Allocation, tokens) -> Allocation:
        """The allocation a token-level policy ended with: kept tokens counted per cell (from
        TokenSet.cells; a merged token counts in its representative's cell), and as `levels` the
        largest LOD level whose token count fits each cell's count (the min level for 0 tokens)."""
        g = self.geometry
        B = tokens.mask.shape[0]
        cells = torch.where(tokens.mask, tokens.cells, g.n_cells)  # padding → an overflow bin
        counts = torch.zeros(B, g.n_cells + 1, dtype=torch.long, device=cells.device)
        counts.scatter_add_(1, cells, torch.ones_like(cells))
        per_cell = counts[:, :g.n_cells].view(B, g.cells_per_side, g.cells_per_side)  # (B, n²) -> (B, Hc, Wc)
        sizes = torch.tensor(g.levels, device=cells.device)
        levels = ((per_cell.unsqueeze(-1) >= sizes).sum(-1) - 1).clamp(g.min_level, g.max_level_index)
        return Allocation(levels=levels, tokens_per_cell=per_cell, num_tokens=tokens.lengths,
                          budgets=allocation.budgets, utility=allocation.utility, tiers=allocation.tiers,
                          policy=allocation.policy)


# ---------------------------------------------------------------------------------- heuristics
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


def stable_seed(*parts) -> int:
    """A seed that is the same for the same inputs on every machine (not Python's salted hash)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
    return int.from_bytes(h.digest()[:4], "little")
