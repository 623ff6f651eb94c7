"""Stage 4 — allocator: relevance + budget → LOD level (tokens) per cell.

Every policy reduces to a per-cell utility map and a total budget; one solver turns those into
levels: the multiple-choice knapsack of knapsack.py (greedy by marginal utility per token, with
neighbour smoothness), run batched on the utility's device (`solve_knapsack_batch`). Training's
Gumbel phases draw levels instead (`Allocator.sample`, `gumbel_levels`).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .geometry import Geometry
from .knapsack import solve_knapsack, solve_knapsack_batch  # noqa: F401  (solve_knapsack: the numpy reference, re-exported)
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
    geometry: Geometry | None = None  # the model's patch/cell/LOD geometry
    scoring: Any = None  # LLMScoring: the one narrow view of later stages token-level policies may use (FastV, SparseVLM)

    @property
    def batch_size(self) -> int:
        return len(self.questions)


@dataclass
class LLMScoring:
    """What a token-level policy may ask of the stages after it, and nothing more: the LLM's input
    for a set of CLIP outputs, the attention inside one LLM layer, and the LLM's embedding of a text."""
    llm_inputs: Any  # (clip tokens (B, T, D), TokenSet) -> (B, T, H): adapter → projector
    layer_attention: Any  # (visual (B, T, H), mask (B, T), questions, layer) -> (weights (B, h, S, S), first visual column (B,))
    embed_text: Any  # str -> (L, H) the LLM's input embeddings of the text's tokens


@dataclass
class Allocation:
    levels: torch.Tensor  # (B, Hc, Wc) long: LOD level index per cell
    tokens_per_cell: torch.Tensor  # (B, Hc, Wc) long
    num_tokens: torch.Tensor  # (B,) long
    budgets: list[int]  # the budget each sample was solved under
    utility: torch.Tensor  # (B, Hc, Wc) the per-cell utility the solver used
    tiers: list[str | None]  # tier picked by tier policies, else None
    policy: str
    level_weights: torch.Tensor | None = None  # (B, Hc, Wc, L) straight-through one-hot levels (training: Gumbel)
    level_logits: torch.Tensor | None = None  # (B, Hc, Wc, L) the logits they were sampled from (training: Gumbel)


# ---------------------------------------------------------------------------------- training's level draw
def gumbel_levels(logits: torch.Tensor, tau: float, seeds: list[int]) -> torch.Tensor:
    """The differentiable level choice training uses (the one straight-through Gumbel-softmax):
    logits (B, ..., L) → one-hot levels forward, softmax gradient backward. Each sample's noise
    comes from its own seeded CPU generator, so a resumed or multi-process run draws the same noise.
    Inference uses the knapsack's hard decisions instead."""
    noise = torch.stack([torch.rand(logits.shape[1:], generator=torch.Generator().manual_seed(int(s)))
                         for s in seeds]).to(logits)
    g = -torch.log(-torch.log(noise.clamp(1e-9, 1 - 1e-9)))
    soft = torch.softmax((logits + g) / tau, -1)
    hard = F.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
    return hard + soft - soft.detach()


# ---------------------------------------------------------------------------------- the policy interface
class Policy:
    """A policy turns the context into (utility map, budgets, tiers) per sample. The concrete
    policies and their registry live in arrcoc_lab.policies; the model receives one as an object.

    Token-level policies (`token_level = True`, the literature reducers) do not plan per-cell
    levels: the compressor runs every cell at the top level, and after the stage named by
    `reduce_after` ("compressor" or "clip") the model calls `reduce()`, which must return exactly
    `budgets[i]` tokens for sample i."""

    name = ""
    cite = ""
    token_level = False  # True: select/merge tokens from the full-resolution set instead of planning levels
    reduce_after = "clip"  # token-level: the stage whose output reduce() cuts, "compressor" or "clip"
    reads_relevance = True  # False: plan() needs neither the query encoder nor the relevance analyzer

    def default_budget(self, geometry: Geometry, cfg: AllocatorConfig) -> int:
        return geometry.budget_for_mode(cfg.default_budget_mode)

    def plan(self, ctx: AllocationContext, budgets: list[int], allocator: "Allocator"):
        raise NotImplementedError

    def fixed_levels(self, ctx: AllocationContext) -> torch.Tensor | None:
        """Levels decided outright (B, Hc, Wc), bypassing the knapsack: training's reading views
        (a sign at a high level, everything else at the minimum). None: plan and solve."""
        return None

    def reduce(self, ctx: AllocationContext, tokens, clip_out, budgets: list[int]):
        """Token-level policies: full-resolution TokenSet (+ ClipOutput when reduce_after == "clip",
        else None) → TokenSet of exactly budgets[i] tokens. After CLIP, the returned tokens are CLIP
        outputs (what the adapter reads next)."""
        raise NotImplementedError(f"policy {self.name!r} is not token-level")


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

    def resolve_budget(self, policy: Policy, budget=None) -> int:
        """The one place a request's budget is resolved: None → the policy's default, a quality
        mode name → its tokens, an int → checked against [min_tokens, max_tokens]."""
        if budget is None:
            return policy.default_budget(self.geometry, self.cfg)
        if isinstance(budget, str):
            budget = self.geometry.budget_for_mode(budget)
        return self.geometry.check_budget(budget)

    @torch.no_grad()
    def forward(self, ctx: AllocationContext, policy: Policy, budgets: list[int]) -> Allocation:
        """Plan with `policy` under already-resolved per-sample `budgets` and solve the knapsack."""
        if policy.token_level:
            return self.top_level(ctx, budgets, policy.name)
        fixed = policy.fixed_levels(ctx)
        if fixed is not None:
            levels = fixed.to(ctx.features.device)
            spent = torch.tensor(self.geometry.levels, device=levels.device)[levels].flatten(1).sum(1).tolist()
            return self._allocation(levels, spent, torch.zeros(levels.shape, device=levels.device),
                                    [None] * len(budgets), policy.name)
        utility, budgets, tiers = policy.plan(ctx, list(budgets), self)
        levels = solve_knapsack_batch(utility.float(), self.geometry, budgets, self.cfg.utility_exponent)
        levels = levels.to(ctx.features.device)  # (B, Hc, Wc) long; a no-op where the policy planned there
        return self._allocation(levels, budgets, utility.float(), tiers, policy.name)

    def sample(self, ctx: AllocationContext, tau: float, seeds: list[int], budgets: list[int], policy: str) -> Allocation:
        """Training: levels drawn by straight-through Gumbel-softmax from the relevance logits,
        differentiable through `level_weights` (the compressor mixes its level heads with them)."""
        logits = self.level_logits(ctx.relevance.cell_logit)  # (B, Hc, Wc, L)
        weights = gumbel_levels(logits, tau, seeds)
        alloc = self._allocation(weights.detach().argmax(-1), budgets, ctx.relevance.cell.detach().float(),
                                 [None] * len(budgets), policy)
        alloc.level_weights, alloc.level_logits = weights, logits
        return alloc

    def _allocation(self, levels, budgets, utility, tiers, policy: str) -> Allocation:
        tokens = torch.tensor(self.geometry.levels, device=levels.device)[levels]  # (B, Hc, Wc)
        return Allocation(levels=levels, tokens_per_cell=tokens, num_tokens=tokens.flatten(1).sum(1),
                          budgets=list(budgets), utility=utility, tiers=tiers, policy=policy)

    def top_level(self, ctx: AllocationContext, budgets: list[int], policy: str) -> Allocation:
        """Every cell at the top level: what a token-level policy reduces from (its budgets are kept
        for reduce(); the allocation is recounted from the kept tokens by `count_kept`)."""
        g = self.geometry
        levels = torch.full((len(budgets), g.cells_per_side, g.cells_per_side), g.max_level_index, dtype=torch.long,
                            device=ctx.features.device)
        return self._allocation(levels, budgets, torch.ones(levels.shape, device=levels.device), [None] * len(budgets),
                                policy)

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


def stable_seed(*parts) -> int:
    """A seed that is the same for the same inputs on every machine (not Python's salted hash)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
    return int.from_bytes(h.digest()[:4], "little")
