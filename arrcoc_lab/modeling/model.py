"""The composed ARR-COC model. It takes its stages as constructor arguments and its forward
reads as the pipeline diagram (docs/ARCHITECTURE.md):

  pixels ─ sam ─ F ─┐
  questions ─ query ┴─ relevance ─ allocator ─ compressor ─ clip ─ adapter ─ projector ─ llm ─ answers

One forward path: inference, evaluation, the demo, the widgets and every training phase call this
forward. The caller hands it a policy object (arrcoc_lab.policies resolves names) and resolved
budgets; training asks for its allocation modes through the same call (`gumbel_tau` for the
straight-through allocator, an `OraclePolicy` for phase 0's given allocations, `stop_after` for
the phases that train only the analyzer).

The hf-vlm preset builds this same class around an existing VLM (modeling/vlm*.py): its vision
tower in SAM's place, pass-throughs for CLIP, adapter and projector, its language model as the LLM.

Token-level policies (the literature reducers) allocate the top level everywhere and cut the full
token set to the budget after the compressor (ToMe) or after CLIP (FastV, SparseVLM, VisionZip,
M3): `policy.reduce()`. That decision is the policy's allocation, so its time and FLOPs are booked
under the "allocator" stage. Reducers that score with the LLM get `LLMScoring`, never the model.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from .adapter import AdapterOutput, QualityAdapter
from .allocator import AllocationContext, Allocator, LLMScoring, Policy
from .clip_tokens import ClipOnTokens, ClipOutput
from .compressor import Compressor, TokenSet
from .geometry import Geometry
from .llm import AnswerLoss, LanguageModel
from .projector import Projector
from .relevance import RelevanceAnalyzer
from .sam_encoder import SamEncoder
from ..errors import InterfaceError
from .trace import Trace


@dataclass
class ModelOutput:
    trace: Trace  # every stage's named outputs, timings and interface statistics
    answers: list[str] | None  # greedy answers (when generate=True)
    loss: torch.Tensor | None  # mean answer cross-entropy (when answers were given)
    answer_loss: AnswerLoss | None = None  # per-sample answer cross-entropy and teacher-forced predictions


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

    def forward(self, pixels: torch.Tensor, questions: list[str], policy: Policy, budget: int | list[int],
                answers: list[str] | None = None, features: torch.Tensor | None = None, generate: bool = True,
                seeds: list[int] | None = None, max_new_tokens: int | None = None, count_flops: bool = False,
                gumbel_tau: float | None = None, analyze: bool = True, stop_after: str | None = None,
                probes: bool | None = None, prompts: list[str] | None = None,
                question_states: list[bool] | None = None) -> ModelOutput:
        """pixels (B, 3, S, S) in [0, 255] and B questions → trace, answers, loss.

        policy: a Policy object; budget: its resolved budget, one int or one per sample.
        Training modes: `gumbel_tau` draws levels by straight-through Gumbel-softmax from the
        relevance (seeded per sample by `seeds`); `analyze=False` skips the analyzer (and the query
        encoder, unless the LLM reads it) for policies that do not read them; `stop_after="relevance"`
        ends after the analyzer; `prompts` replaces the questions in the LLM's byte prompt (training
        drops some, so the LLM also learns the question from the query encoder); `question_states`
        (one bool a sample) withholds the query encoder's states from the LLM where False (training:
        the LLM first learns to read the image with the byte prompt alone, PhaseConfig.question_states)."""
        B = pixels.shape[0]
        budgets = list(budget) if isinstance(budget, (list, tuple)) else [budget] * B
        seeds = seeds or list(range(B))
        tr = Trace(probes=self.probes if probes is None else probes, count_flops=count_flops, sync=pixels.is_cuda)
        F = self._encode(tr, pixels, features)
        relevance = analyze or policy.reads_relevance or gumbel_tau is not None
        if relevance or self.llm.question_proj is not None:
            self._encode_query(tr, questions)
        if relevance:
            self._analyze(tr, F, pixels)
        if stop_after == "relevance":
            return ModelOutput(trace=tr, answers=None, loss=None)
        ctx = AllocationContext(tr.relevance, tr.query, questions, pixels, F, seeds, geometry=self.geometry,
                                scoring=LLMScoring(self._llm_inputs, self._layer_attention(tr), self.llm.embed_text))
        self._allocate(tr, ctx, policy, budgets, gumbel_tau)
        self._compress(tr, F, ctx, policy)
        self._adapt(tr, ctx, policy)
        return self._answer(tr, prompts or questions, answers, generate, max_new_tokens, question_states)

    # ---------------------------------------------------------------------------- the stages
    def _encode(self, tr: Trace, pixels: torch.Tensor, features: torch.Tensor | None) -> torch.Tensor:
        g, B = self.geometry, pixels.shape[0]
        tr.check("input.pixels", pixels, shape=(B, 3, g.image_size, g.image_size), lo=0, hi=255)
        with tr.stage("sam"):
            F = features if features is not None else self.encode_image(pixels)
        tr.check("sam.features", F, shape=(B, self.sam.out_chans, g.patches_per_side, g.patches_per_side))
        return F

    def _encode_query(self, tr: Trace, questions: list[str]) -> None:
        with tr.stage("query"):
            tr.query = self.query_encoder(questions)
        tr.check("query.tokens", tr.query.tokens, shape=(len(questions), None, None), mask=tr.query.mask)

    def _analyze(self, tr: Trace, F: torch.Tensor, pixels: torch.Tensor) -> None:
        g, B = self.geometry, F.shape[0]
        with tr.stage("relevance"):
            tr.relevance = self.relevance(F, tr.query, pixels)
        tr.check("relevance.patch", tr.relevance.patch, shape=(B, g.patches_per_side, g.patches_per_side), lo=0, hi=1)

    def _allocate(self, tr: Trace, ctx: AllocationContext, policy: Policy, budgets: list[int],
                  gumbel_tau: float | None) -> None:
        with tr.stage("allocator"):
            if gumbel_tau is not None:
                tr.allocation = self.allocator.sample(ctx, gumbel_tau, ctx.seeds, budgets, policy.name)
            else:
                tr.allocation = self.allocator(ctx, policy, budgets)
        self._check_allocation(tr, policy)

    def _compress(self, tr: Trace, F: torch.Tensor, ctx: AllocationContext, policy: Policy) -> None:
        with tr.stage("compressor"):
            tr.tokens = self.compressor(F, tr.allocation.levels, level_weights=tr.allocation.level_weights)
        tr.check("compressor.tokens", tr.tokens.tokens, mask=tr.tokens.mask)
        if tr.probes and not torch.equal(tr.tokens.lengths, tr.allocation.num_tokens):
            raise InterfaceError("compressor emitted a different number of tokens than allocated")
        if policy.token_level and policy.reduce_after == "compressor":
            self._reduce(tr, ctx, policy)

    def _adapt(self, tr: Trace, ctx: AllocationContext, policy: Policy) -> None:
        """CLIP on the token set (then a reducer's cut, if it cuts here) → adapter → projector."""
        after_clip = policy.token_level and policy.reduce_after == "clip"
        with tr.stage("clip"):
            tr.clip = self.clip(tr.tokens, cls_attention=after_clip)
        tr.check("clip.tokens", tr.clip.tokens, mask=tr.tokens.mask)
        if after_clip:
            self._reduce(tr, ctx, policy)
        with tr.stage("adapter"):
            tr.adapter = self.adapter(tr.clip.tokens, tr.tokens.levels, tr.tokens.mask)
        tr.check("adapter.tokens", tr.adapter.tokens, mask=tr.tokens.mask)
        with tr.stage("projector"):
            tr.visual = self.projector(tr.adapter.tokens)
        tr.check("projector.tokens", tr.visual, shape=(tr.visual.shape[0], None, self.llm.hidden_size), mask=tr.tokens.mask)

    def _answer(self, tr: Trace, questions: list[str], answers: list[str] | None, generate: bool,
                max_new_tokens: int | None, question_states: list[bool] | None = None) -> ModelOutput:
        answer_loss = out = None
        where = self._token_positions(tr)
        query = tr.query
        if query is not None and question_states is not None:  # a withheld sample's states: none of its tokens
            keep = torch.tensor(question_states, dtype=torch.bool, device=query.mask.device)
            query = replace(query, mask=query.mask & keep[:, None])  # (B, L)
        with tr.stage("llm"):
            if answers is not None:
                answer_loss = self.llm.answer_loss(tr.visual, tr.tokens.mask, questions, answers, query=query, **where)
            if generate:
                out = self.llm.generate(tr.visual, tr.tokens.mask, questions, max_new_tokens, query=query, **where)
        return ModelOutput(trace=tr, answers=out, loss=answer_loss.mean if answer_loss else None,
                           answer_loss=answer_loss)

    def _layer_attention(self, tr: Trace):
        """LLMScoring's view of one LLM layer's attention, with this forward's question states."""
        return lambda visual, mask, questions, layer: self.llm.layer_attention(visual, mask, questions, layer,
                                                                               query=tr.query,
                                                                               **self._token_positions(tr))

    def _token_positions(self, tr: Trace) -> dict:
        """The token set's centres, for an LLM stage that places visual tokens by position (hf-vlm:
        Qwen2-VL's M-RoPE); nothing for the others."""
        return {"positions": tr.tokens.positions} if getattr(self.llm, "reads_positions", False) else {}

    def _llm_inputs(self, clip_tokens: torch.Tensor, tokens: TokenSet) -> torch.Tensor:
        """A token set as the LLM would see it (adapter → projector), for LLMScoring: (B, T, H)."""
        return self.projector(self.adapter(clip_tokens, tokens.levels, tokens.mask).tokens)

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
        # token-level: checked exactly after reduce(); Gumbel samples: the efficiency loss holds the budget
        if tr.probes and over and not p.token_level and a.level_weights is None:
            raise InterfaceError(f"allocator exceeded its budget: {over}")
