"""Reduction baselines from the token-pruning literature, at the same budget and on
the same weights as every other policy.

Each is a token-level `Policy`: the allocator puts every cell at the top level, the compressor
emits the full-resolution token set (one token per patch in lab and paper), and `reduce()` keeps
or merges exactly B of those tokens — after CLIP (FastV, SparseVLM, VisionZip, M3) or before it
(ToMe). Merged tokens carry the mean position of their members, the LOD level whose token area is
closest to the area they cover, and the cell of their representative (where `tokens_per_cell`
counts them).

None of them is trained for this pipeline (all are training-free methods, M3 aside): they run on
the weights every policy shares. Each docstring cites the method and says what differs.
Importing this module registers the policies; arrcoc_lab.modeling.model imports it, so the registry holds
them whenever a pipeline is loaded.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..modeling.allocator import Policy
from ..modeling.compressor import TokenSet
from ..errors import InputError
from ..modeling.geometry import Geometry


# ---------------------------------------------------------------------------------- token-set helpers
def select_tokens(ts: TokenSet, features: torch.Tensor, keep: torch.Tensor) -> TokenSet:
    """Keep the marked tokens (keep (B, T) bool), in their original order; `features` (B, T, D) are
    the vectors they carry forward (compressor tokens or CLIP outputs)."""
    B = keep.shape[0]
    K = int(keep.sum(1).max())
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :K]  # kept first, order preserved

    def take(x):  # (B, T, ...) -> (B, K, ...)
        return torch.gather(x, 1, order.view(B, K, *([1] * (x.dim() - 2))).expand(B, K, *x.shape[2:]))

    mask = take(keep)
    return TokenSet(tokens=take(features) * mask.unsqueeze(-1), mask=mask, positions=take(ts.positions),
                    levels=take(ts.levels) * mask, cells=torch.where(mask, take(ts.cells), -1))


def merge_tokens(ts: TokenSet, features: torch.Tensor, assign: torch.Tensor, cells: torch.Tensor,
                 geometry: Geometry) -> TokenSet:
    """Average the tokens assigned to each output slot.

    features (B, T, D) the vectors to average; assign (B, T) long, the slot of each token (-1 =
    dropped; padding is always dropped); cells (B, K) long, the cell each slot counts in (its
    representative's). A slot with no member is padding."""
    B, T, D = features.shape
    K = cells.shape[1]
    w = ((assign >= 0) & ts.mask).to(features.dtype)  # (B, T)
    slot = assign.clamp(min=0)

    def pool(x):  # (B, T, d) -> (B, K, d): weighted sum over each slot's members
        d = x.shape[-1]
        return x.new_zeros(B, K, d).scatter_add_(1, slot.unsqueeze(-1).expand(B, T, d), x * w.unsqueeze(-1))

    count = pool(w.unsqueeze(-1)).squeeze(-1)  # (B, K) members per slot
    levels = torch.tensor(geometry.levels, dtype=features.dtype, device=features.device)
    area = pool((geometry.cell_patches**2 / levels[ts.levels]).unsqueeze(-1)).squeeze(-1)  # (B, K) patches covered
    mask = count > 0
    denom = count.clamp(min=1).unsqueeze(-1)
    return TokenSet(tokens=pool(features) / denom, mask=mask,
                    positions=pool(ts.positions.to(features.dtype)) / denom,
                    levels=level_for_area(area, geometry) * mask, cells=torch.where(mask, cells, -1))


def level_for_area(area: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """LOD level whose tokens cover closest (in log) to `area` patches each: a merge of four
    top-level tokens is a level-(top−1) token, a merge of a whole cell a level-0 token."""
    g = geometry
    per_cell = g.cell_patches**2 / area.clamp(min=1e-6)  # equivalent tokens per cell
    levels = torch.tensor(g.levels, dtype=area.dtype, device=area.device)
    k = (per_cell.log().unsqueeze(-1) - levels.log()).abs().argmin(-1)
    return k.clamp(g.min_level, g.max_level_index)


def top_b(score: torch.Tensor, mask: torch.Tensor, budgets: list[int]) -> torch.Tensor:
    """(B, T) keep mask of the budgets[i] highest-scoring real tokens of each sample."""
    score = score.float().masked_fill(~mask, float("-inf"))
    keep = torch.zeros_like(mask)
    for i, b in enumerate(budgets):
        keep[i, score[i].topk(b).indices] = True
    return keep


def _scoring(ctx, name: str):
    if ctx.scoring is None:
        raise InputError(f"policy {name!r} scores tokens with the LLM; it runs inside ARRCOC.forward, which "
                         "passes the scoring hook in AllocationContext.scoring")
    return ctx.scoring


# ---------------------------------------------------------------------------------- policies
class TokenPolicy(Policy):
    token_level = True

    def default_budget(self, geometry, cfg):
        return geometry.uniform_budget


class FastVPolicy(TokenPolicy):
    """FastV — Chen et al., "An Image is Worth 1/2 Tokens After Layer 2", ECCV 2024.

    FastV runs the LLM on all visual tokens up to layer K, ranks them by the attention they
    receive in layer K and drops the rest inside the same forward. Here it is a two-pass
    approximation, acting as a pruning hook on the LLM: pass 1 runs adapter → projector → LLM
    layers 1..K on the full token set (eager attention, stopped after layer K) and ranks visual
    tokens by the attention from the last prompt token (`score="mean"`: the mean
    over all later tokens, the paper's score); pass 2 is the ordinary answer pass on the B kept
    CLIP tokens. Differences: layers 1..K run again on the kept tokens instead of being reused,
    kept tokens get new contiguous positions, and B is an absolute budget instead of a ratio R.
    """

    name = "fastv"
    cite = ("FastV (Chen et al., ECCV 2024): keep the visual tokens most attended by the last text token in LLM "
            "layer K=2; two-pass approximation (score pass on all tokens, answer pass on the kept ones).")

    def __init__(self, layer: int = 2, score: str = "last"):
        if score not in ("last", "mean"):
            raise InputError(f"unknown fastv score {score!r}; known: ['last', 'mean']")
        self.layer = layer  # FastV's K: rank by the attention inside LLM layer K (1-based; paper K=2), clamped to the depth
        self.score = score  # "last": attention from the last prompt token; "mean": mean over all later tokens (paper)

    @torch.no_grad()
    def reduce(self, ctx, tokens, clip_out, budgets):
        sc = _scoring(ctx, self.name)
        visual = sc.llm_inputs(clip_out.tokens, tokens)  # (B, T, H)
        w, start = sc.layer_attention(visual, tokens.mask, ctx.questions, self.layer)
        score = torch.zeros(tokens.mask.shape, dtype=torch.float, device=visual.device)
        for i in range(len(budgets)):
            n, s = int(tokens.mask[i].sum()), int(start[i])
            if self.score == "last":
                received = w[i, :, -1, s:s + n].float().mean(0)  # (n,): last prompt token's attention
            else:
                received = w[i, :, s:, s:s + n].float().mean((0, 1))  # (n,): mean over all later tokens
            score[i, tokens.mask[i]] = received
        return select_tokens(tokens, clip_out.tokens, top_b(score, tokens.mask, budgets))


class SparseVLMPolicy(TokenPolicy):
    """SparseVLM — Zhang et al., "SparseVLM: Visual Token Sparsification for Efficient
    Vision-Language Model Inference", ICML 2025.

    Text-guided, training-free: question tokens with above-average relevance to the image are the
    "raters"; each visual token is scored by the attention the raters pay it, and the top B are
    kept. Here the scores are computed once at the LLM input — the question's token embeddings
    (the LLM's own embedding table) against the projected visual tokens (adapter → projector on
    the full set), softmax over visual tokens — rather than from attention inside several decoder
    layers with progressive, rank-adaptive sparsification, and pruned tokens are not recycled.
    """

    name = "sparsevlm"
    cite = ("SparseVLM (Zhang et al., ICML 2025): text-guided scoring — question-token 'raters' score visual tokens "
            "by attention in the LLM's input space; top B kept (single step, no recycling).")

    @torch.no_grad()
    def reduce(self, ctx, tokens, clip_out, budgets):
        sc = _scoring(ctx, self.name)
        visual = sc.llm_inputs(clip_out.tokens, tokens)  # (B, T, H)
        scale = visual.shape[-1] ** -0.5
        score = torch.zeros(tokens.mask.shape, dtype=torch.float, device=visual.device)
        for i, q in enumerate(ctx.questions):
            text = sc.embed_text(q).to(visual.dtype)  # (L, H)
            logits = (text @ visual[i][tokens.mask[i]].T).float() * scale  # (L, n)
            relevance = logits.mean(1)  # (L,) how strongly each text token relates to the image
            raters = relevance >= relevance.mean()
            score[i, tokens.mask[i]] = logits[raters].softmax(-1).mean(0)
        return select_tokens(tokens, clip_out.tokens, top_b(score, tokens.mask, budgets))


class VisionZipPolicy(TokenPolicy):
    """VisionZip — Yang et al., "VisionZip: Longer is Better but Not Necessary in Vision Language
    Models", CVPR 2025.

    Dominant tokens: the ones the vision encoder's class token attends to most. Contextual tokens:
    the remaining tokens are merged into a few evenly spaced targets by similarity. Here the
    attention is the class token's in CLIP's last block (VisionZip reads the layer whose output the
    LLM gets), similarity is cosine between CLIP output tokens (VisionZip uses the keys), and the
    split is `context` of B contextual (VisionZip: 54 dominant + 10 contextual).
    """

    name = "visionzip"
    cite = ("VisionZip (Yang et al., CVPR 2025): dominant tokens by CLIP class-token attention + a few contextual "
            "tokens merged from the rest by similarity.")

    def __init__(self, context: float = 10 / 64):
        self.context = context  # share of the budget spent on merged contextual tokens (VisionZip: 10 of 64)

    @torch.no_grad()
    def reduce(self, ctx, tokens, clip_out, budgets):
        g = ctx.geometry
        feats, attn = clip_out.tokens, clip_out.cls_attention
        if attn is None:
            raise InputError("visionzip needs CLIP's class-token attention (ClipOnTokens(..., cls_attention=True))")
        B, T, _ = feats.shape
        K = max(budgets)
        assign = torch.full((B, T), -1, dtype=torch.long, device=feats.device)
        cells = torch.full((B, K), -1, dtype=torch.long, device=feats.device)
        for i, b in enumerate(budgets):
            idx = tokens.mask[i].nonzero().squeeze(1)  # (n,) real tokens
            n_ctx = min(max(1, round(b * self.context)), b - 1) if b > 1 else 0
            n_dom = b - n_ctx
            dom = idx[attn[i, idx].topk(n_dom).indices.sort().values]  # dominant, original order
            rest = idx[~torch.isin(idx, dom)]  # (R,) the others, original order
            assign[i, dom] = torch.arange(n_dom, device=feats.device)
            cells[i, :n_dom] = tokens.cells[i, dom]
            if n_ctx:
                targets = rest[torch.arange(n_ctx, device=feats.device) * len(rest) // n_ctx]  # evenly spaced
                sim = F.normalize(feats[i, rest], dim=-1) @ F.normalize(feats[i, targets], dim=-1).T  # (R, n_ctx)
                nearest = sim.argmax(1)
                nearest[torch.isin(rest, targets)] = torch.arange(n_ctx, device=feats.device)  # a target keeps itself
                assign[i, rest] = n_dom + nearest
                cells[i, n_dom:b] = tokens.cells[i, targets]
        return merge_tokens(tokens, feats, assign, cells, g)


class ToMePolicy(TokenPolicy):
    """ToMe — Bolya et al., "Token Merging: Your ViT But Faster", ICLR 2023.

    Bipartite soft matching: split the tokens alternately into sets A and B, link each A token to
    its most similar B token (cosine), merge the r most similar pairs (size-weighted average) and
    repeat. ToMe merges r tokens inside every ViT block (metric: the attention keys) and uses
    proportional attention; here the rounds run on the compressor's full-resolution tokens before
    CLIP, with r = min(T − B, |A|) per round until exactly B remain, so CLIP then runs on B merged
    tokens placed at their members' mean position. No proportional attention.
    """

    name = "tome"
    cite = ("ToMe (Bolya et al., ICLR 2023): bipartite soft matching merges the most similar tokens (size-weighted) "
            "down to B, before CLIP.")
    reduce_after = "compressor"

    @torch.no_grad()
    def reduce(self, ctx, tokens, clip_out, budgets):
        g = ctx.geometry
        feats = tokens.tokens
        B, T, _ = feats.shape
        K = max(budgets)
        assign = torch.full((B, T), -1, dtype=torch.long, device=feats.device)
        cells = torch.full((B, K), -1, dtype=torch.long, device=feats.device)
        for i, b in enumerate(budgets):
            idx = tokens.mask[i].nonzero().squeeze(1)
            group, rep = bipartite_merge(feats[i, idx].float(), b)  # (n,) slot per token, (b,) representative
            assign[i, idx] = group
            cells[i, :b] = tokens.cells[i, idx[rep]]
        return merge_tokens(tokens, feats, assign, cells, g)


def bipartite_merge(x: torch.Tensor, budget: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ToMe's bipartite soft matching, repeated until `budget` tokens remain. x (n, D) →
    (slot of each input token (n,), representative input index of each slot (budget,)); slots are
    ordered by their representative (the B-side token a group merged into)."""
    total = x.clone()  # (T, D) sum of each current token's members
    size = torch.ones(len(x), device=x.device)
    rep = torch.arange(len(x), device=x.device)
    group = torch.arange(len(x), device=x.device)  # current token of each input token
    while len(total) > budget:
        T = len(total)
        a, b = torch.arange(0, T, 2, device=x.device), torch.arange(1, T, 2, device=x.device)
        r = min(T - budget, len(a))
        metric = F.normalize(total / size.unsqueeze(-1), dim=-1)
        best, match = (metric[a] @ metric[b].T).max(1)  # (|A|,) each A token's most similar B token
        order = best.argsort(descending=True)
        merged, kept = order[:r], order[r:]
        new = torch.empty(T, dtype=torch.long, device=x.device)  # current index -> next round's index
        new[a[kept]] = torch.arange(len(kept), device=x.device)
        new[b] = len(kept) + torch.arange(len(b), device=x.device)
        new[a[merged]] = len(kept) + match[merged]
        n = len(kept) + len(b)
        total = total.new_zeros(n, total.shape[1]).index_add_(0, new, total)
        size = size.new_zeros(n).index_add_(0, new, size)
        rep = torch.cat([rep[a[kept]], rep[b]])  # a group keeps its destination's representative
        group = new[group]
    order = rep.argsort()
    return order.argsort()[group], rep[order]


class M3Policy(TokenPolicy):
    """Matryoshka Multimodal Models (M3) — Cai et al., 2024 (ICLR 2025).

    M3 average-pools the vision encoder's output grid to nested scales (24² → 12² → 6² → 3² → 1
    tokens) and trains the LLM on all of them, so one model serves any scale. Here the CLIP output
    of the full-resolution grid (G×G) is average-pooled to one scale of exactly B tokens for the
    whole image: √B×√B bins when B is a perfect square (every sweep budget is), else r ≈ √B rows
    of ⌊B/r⌋ or ⌈B/r⌉ bins. No Matryoshka training: the weights every policy shares. Unlike the
    largest uniform LOD level that fits B (which can be far below B, e.g. 16 of 36 in lab), this
    spends the whole budget; at B = n_cells × level it is the compressor's uniform pooling of CLIP
    outputs instead of pooling SAM features before CLIP.
    """

    name = "m3"
    cite = ("Matryoshka M3 (Cai et al., 2024): one nested pooled scale for the whole image — CLIP's full-resolution "
            "output average-pooled to a ≈√B×√B grid of exactly B tokens.")

    @torch.no_grad()
    def reduce(self, ctx, tokens, clip_out, budgets):
        g = ctx.geometry
        side = g.cells_per_side * g.level_side(g.max_level_index)  # G: tokens per side at the top level
        B, T, _ = clip_out.tokens.shape
        K = max(budgets)
        assign = torch.full((B, T), -1, dtype=torch.long, device=tokens.mask.device)
        cells = torch.full((B, K), -1, dtype=torch.long, device=tokens.mask.device)
        for i, b in enumerate(budgets):
            rows, cols = pooled_grid(b, side)
            offset = torch.tensor([0] + cols[:-1], device=assign.device).cumsum(0)  # first slot of each row
            ncols = torch.tensor(cols, device=assign.device)
            y, x = tokens.positions[i].float().unbind(-1)  # (T,) each
            row = (y * rows).long().clamp(0, rows - 1)
            col = torch.minimum((x * ncols[row]).long(), ncols[row] - 1)
            assign[i] = torch.where(tokens.mask[i], offset[row] + col, -1)
            cy = torch.repeat_interleave((torch.arange(rows, device=assign.device) + 0.5) / rows, ncols)  # (b,)
            cx = torch.cat([(torch.arange(c, device=assign.device) + 0.5) / c for c in cols])
            n = g.cells_per_side
            cells[i, :b] = (cy * n).long().clamp(max=n - 1) * n + (cx * n).long().clamp(max=n - 1)
        return merge_tokens(tokens, clip_out.tokens, assign, cells, g)


def pooled_grid(budget: int, side: int) -> tuple[int, list[int]]:
    """Rows r and bins per row for exactly `budget` bins over a side×side grid, every bin
    non-empty: r = √budget for perfect squares, else the nearest r with ⌈budget/r⌉ ≤ side."""
    if not 1 <= budget <= side * side:
        raise InputError(f"m3 budget {budget} outside [1, {side * side}]")
    rows = min(max(round(math.sqrt(budget)), math.ceil(budget / side)), side)
    base, extra = divmod(budget, rows)
    return rows, [base + (1 if r < extra else 0) for r in range(rows)]


REDUCERS = (FastVPolicy, SparseVLMPolicy, VisionZipPolicy, ToMePolicy, M3Policy)  # the registry takes one of each
BASELINES = tuple(cls.name for cls in REDUCERS)
