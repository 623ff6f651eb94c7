"""The composed ARR-COC model. It takes its stages as constructor arguments and its forward
reads as the pipeline diagram (docs/ARCHITECTURE.md):

  pixels ─ sam ─ F ─┐
  questions ─ query ┴─ relevance ─ allocator ─ compressor ─ clip ─ adapter ─ projector ─ llm ─ answers

Token-level policies (the literature baselines, baselines.py) allocate the top level everywhere
and cut the full token set to the budget after the compressor (ToMe) or after CLIP (FastV,
SparseVLM, VisionZip, M3): `policy.reduce()`. That decision is the policy's allocation, so its
time and FLOPs are booked under the "allocator" stage.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .adapter import AdapterOutput, QualityAdapter
from . import baselines  # noqa: F401  registers the reduction baselines in allocator.POLICIES
from .allocator import AllocationContext, Allocator, Policy, get_policy
from .clip_tokens import ClipOnTokens, ClipOutput
from .compressor import Compressor, TokenSet
from .geometry import Geometry
from .llm import LanguageModel
from .projector import Projector
from .relevance import RelevanceAnalyzer
from .sam_encoder import SamEncoder
from .errors import InterfaceError
from .trace import Trace


@dataclass
class ModelOutput:
    trace: Trace  # every stage's named outputs, timings and interface statistics
    answers: list[str] | None  # greedy answers (when generate=True)
    loss: torch.Tensor | None  # answer cross-entropy (when answers were given)


@dataclass
class Downstream:
    tokens: TokenSet  # the compressor's token set
    clip: ClipOutput
    adapter: AdapterOutput
    visual: torch.Tensor  # (B, T, H) projected tokens, the LLM's visual input


class ARRCOC(nn.Module):
    def __init__(self, geometry: Geometry, sam: SamEncoder, query_encoder: nn.Module, relevance: RelevanceAnalyzer,
                 allocator: Allocator, compressor: Compressor, clip: ClipOnTokens, adapter: QualityAdapter,
                 projector: Projector, llm: LanguageModel, probes: bool = True):
        super().__init__()
        self.geometry = geometry
        self.sam, self.query_encoder, self.relevance = sam, query_encoder, relevance
        self.allocator, self.compressor, self.clip = allocator, compressor, clip
        self.adapter, self.projector, self.llm = adapter, projector, llm
        self.probes = probes

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """The frozen, cacheable part: pixels (B, 3, S, S) → SAM features (B, C, Hp, Wp)."""
        return self.sam(pixels)

    def downstream(self, features: torch.Tensor, levels: torch.Tensor,
                   level_weights: torch.Tensor | None = None) -> Downstream:
        """Compressor → CLIP → adapter → projector for a given allocation, untimed (training, probes)."""
        ts = self.compressor(features, levels, level_weights=level_weights)
        c = self.clip(ts)
        a = self.adapter(c.tokens, ts.levels, ts.mask)
        return Downstream(ts, c, a, self.projector(a.tokens))

    def forward(self, pixels: torch.Tensor, questions: list[str], policy: str = "arrcoc", budget=None,
                answers: list[str] | None = None, features: torch.Tensor | None = None, generate: bool = True,
                seeds: list[int] | None = None, max_new_tokens: int | None = None,
                count_flops: bool = False) -> ModelOutput:
        g, B, p = self.geometry, pixels.shape[0], get_policy(policy)
        tr = Trace(probes=self.probes, count_flops=count_flops, sync=pixels.is_cuda)
        tr.check("input.pixels", pixels, shape=(B, 3, g.image_size, g.image_size), lo=0, hi=255)
        with tr.stage("sam"):
            F = features if features is not None else self.encode_image(pixels)
        tr.check("sam.features", F, shape=(B, self.sam.out_chans, g.patches_per_side, g.patches_per_side))
        with tr.stage("query"):
            tr.query = self.query_encoder(questions)
        tr.check("query.tokens", tr.query.tokens, shape=(B, None, None), mask=tr.query.mask)
        with tr.stage("relevance"):
            tr.relevance = self.relevance(F, tr.query, pixels)
        tr.check("relevance.patch", tr.relevance.patch, shape=(B, g.patches_per_side, g.patches_per_side), lo=0, hi=1)
        with tr.stage("allocator"):
            ctx = AllocationContext(tr.relevance, tr.query, questions, pixels, F, seeds or list(range(B)), model=self)
            tr.allocation = self.allocator(ctx, policy, budget)
        self._check_allocation(tr, p)
        with tr.stage("compressor"):
            tr.tokens = self.compressor(F, tr.allocation.levels)
        tr.check("compressor.tokens", tr.tokens.tokens, mask=tr.tokens.mask)
        if tr.probes and not torch.equal(tr.tokens.lengths, tr.allocation.num_tokens):
            raise InterfaceError("compressor emitted a different number of tokens than allocated")
        if p.token_level and p.reduce_after == "compressor":
            self._reduce(tr, ctx, p)
        with tr.stage("clip"):
            tr.clip = self.clip(tr.tokens, cls_attention=p.token_level and p.reduce_after == "clip")
        tr.check("clip.tokens", tr.clip.tokens, mask=tr.tokens.mask)
        if p.token_level and p.reduce_after == "clip":
            self._reduce(tr, ctx, p)
        with tr.stage("adapter"):
            tr.adapter = self.adapter(tr.clip.tokens, tr.tokens.levels, tr.tokens.mask)
        tr.check("adapter.tokens", tr.adapter.tokens, mask=tr.tokens.mask)
        with tr.stage("projector"):
            visual = self.projector(tr.adapter.tokens)
        tr.check("projector.tokens", visual, shape=(B, None, self.llm.hidden_size), mask=tr.tokens.mask)
        loss = out = None
        with tr.stage("llm"):
            if answers is not None:
                loss = self.llm.loss(visual, tr.tokens.mask, questions, answers)
            if generate:
                out = self.llm.generate(visual, tr.tokens.mask, questions, max_new_tokens)
        return ModelOutput(trace=tr, answers=out, loss=loss)

    def _reduce(self, tr: Trace, ctx: AllocationContext, p: Policy) -> None:
        """A token-level policy cuts the full token set (and its CLIP output, once computed) to
        exactly its budget; the allocation is recounted from the tokens it kept."""
        with tr.stage("allocator"):
            kept = p.reduce(ctx, tr.tokens, tr.clip, tr.allocation.budgets)
            tr.allocation = self.allocator.count_kept(tr.allocation, kept)
        want = torch.tensor(tr.allocation.budgets, device=kept.mask.device)
        if tr.probes and not torch.equal(kept.lengths, want):
            raise InterfaceError(f"policy {p.name!r} kept {kept.lengths.tolist()} tokens for budgets {want.tolist()}")
        tr.check("reduce.tokens", kept.tokens, mask=kept.mask)
        tr.check("reduce.positions", kept.positions, mask=kept.mask, lo=0, hi=1)
        if tr.clip is not None:  # reduced after CLIP: the kept tokens are CLIP outputs
            tr.clip = ClipOutput(tokens=kept.tokens, pooled=tr.clip.pooled, cls_attention=None)
        tr.tokens = kept

    def _check_allocation(self, tr: Trace, p: Policy) -> None:
        a, g = tr.allocation, self.geometry
        tr.check("allocator.levels", a.levels, shape=(a.levels.shape[0], g.cells_per_side, g.cells_per_side),
                 dtype=torch.long, lo=g.min_level, hi=g.max_level_index)
        over = [(int(n), b) for n, b in zip(a.num_tokens, a.budgets) if n > b]
        if tr.probes and over and not p.token_level:  # token-level: checked exactly after reduce()
            raise InterfaceError(f"allocator exceeded its budget: {over}")
