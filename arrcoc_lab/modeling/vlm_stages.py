"""The other stages of the `hf-vlm` preset: the same ARRCOC forward, with stages that fit a VLM
whose vision tower and projector already make the LLM's visual tokens (vlm.py) and whose language
model answers (vlm_llm.py).

  query        MiniLM, as in every preset, plus the question in the VLM's own input embeddings
  relevance    the learned analyzer of the other presets, on top of a zero-shot relevance: the
               question's tokens score the VLM's visual tokens in the LLM's input space (SparseVLM's
               text raters, as a map); a zero-initialised weight adds the learned analyzer's logit,
               so a fresh pipeline allocates by the zero-shot signal and phase 1-A trains the rest
  compressor   pooling only: level k is the VLM's tokens average-pooled (no learned heads)
  clip, adapter, projector   pass-throughs: the tokens are already what the LLM reads
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn

from .adapter import AdapterOutput
from .clip_tokens import ClipOutput
from .compressor import Compressor, CompressorConfig, TokenSet
from .geometry import Geometry
from .query_encoder import QueryEncoding
from .relevance import RelevanceAnalyzer, RelevanceConfig, RelevanceOutput


# ---------------------------------------------------------------------------------- query
@dataclass
class VLMQueryEncoding(QueryEncoding):
    text: torch.Tensor | None = None  # (B, Lt, H) the question's tokens in the VLM's input-embedding space
    text_mask: torch.Tensor | None = None  # (B, Lt) bool, True at real tokens


class VLMQueryEncoder(nn.Module):
    """Frozen: MiniLM's encoding (what the analyzer reads in every preset) and the VLM's embedding of
    the question's tokens (what the zero-shot relevance reads). The embedding table is the VLM's own,
    shared, never stored by us (the query encoder is external to our files)."""

    def __init__(self, minilm: nn.Module, embedding: nn.Embedding, tokenizer):
        super().__init__()
        self.minilm, self.embedding, self.tokenizer = minilm, embedding, tokenizer
        self.dim = minilm.dim

    def train(self, mode: bool = True):
        return super().train(False)

    @torch.no_grad()
    def forward(self, questions: list[str]) -> VLMQueryEncoding:
        q = self.minilm(questions)
        eos = self.tokenizer.eos_token_id or 0
        ids = [self.tokenizer(t, add_special_tokens=False).input_ids or [eos] for t in questions]
        L, device = max(len(i) for i in ids), self.embedding.weight.device
        padded = torch.tensor([i + [i[0]] * (L - len(i)) for i in ids], device=device)  # (B, Lt)
        mask = torch.tensor([[True] * len(i) + [False] * (L - len(i)) for i in ids], device=device)
        return VLMQueryEncoding(tokens=q.tokens, mask=q.mask, pooled=q.pooled, text=self.embedding(padded),
                                text_mask=mask)


# ---------------------------------------------------------------------------------- relevance
@dataclass
class VLMRelevanceOutput(RelevanceOutput):
    zero_shot: torch.Tensor | None = None  # (B, Hp, Wp) training-free query relevance in [0, 1]
    learned_weight: torch.Tensor | None = None  # () weight of the learned analyzer's logit in the blend (0 at start)


def zero_shot_logits(features: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
    """Training-free query relevance per visual token, as a logit (B, Hp, Wp).

    features (B, H, Hp, Wp): the VLM's visual tokens in its LLM's input space; text (B, L, H): the
    question's input embeddings. Cosine similarity of every question token to every visual token,
    standardised over the image (scale-free across VLMs); the question tokens related to the image
    more than average are the raters (SparseVLM's selection); a token's logit is the raters' mean z-score."""
    B, H, Hp, Wp = features.shape
    v = nn.functional.normalize(features.flatten(2).transpose(1, 2).float(), dim=-1)  # (B, H, Hp, Wp) -> (B, N, H)
    t = nn.functional.normalize(text.float(), dim=-1)  # (B, L, H)
    cos = t @ v.transpose(1, 2)  # (B, L, N)
    z = (cos - cos.mean(-1, keepdim=True)) / cos.std(-1, keepdim=True).clamp(min=1e-6)  # (B, L, N)
    m = text_mask.float()
    relation = cos.mean(-1)  # (B, L) how strongly each question token relates to the image
    average = (relation * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1)
    raters = ((relation >= average) & text_mask).float()  # (B, L)
    score = (z * raters.unsqueeze(-1)).sum(1) / raters.sum(1, keepdim=True).clamp(min=1)  # (B, N)
    return score.view(B, Hp, Wp)


class VLMRelevanceAnalyzer(RelevanceAnalyzer):
    """relevance = sigmoid(zero-shot logit + w · learned logit), w a parameter that starts at 0."""

    def __init__(self, cfg: RelevanceConfig, geometry: Geometry):
        super().__init__(cfg, geometry)
        self.learned_weight = nn.Parameter(torch.zeros(()))

    def forward(self, features: torch.Tensor, query: VLMQueryEncoding, pixels: torch.Tensor) -> VLMRelevanceOutput:
        out = super().forward(features, query, pixels)  # the learned analyzer, as in every preset
        zs = zero_shot_logits(features, query.text, query.text_mask)  # (B, Hp, Wp)
        learned = torch.logit(out.patch.clamp(1e-4, 1 - 1e-4))
        patch = torch.sigmoid(zs + self.learned_weight * learned)  # (B, Hp, Wp)
        cell = self.to_cells(patch)
        parts = {f.name: getattr(out, f.name) for f in fields(out)}
        parts.update(patch=patch, cell=cell, cell_logit=torch.logit(cell.clamp(1e-4, 1 - 1e-4)))
        return VLMRelevanceOutput(**parts, zero_shot=torch.sigmoid(zs), learned_weight=self.learned_weight)


# ---------------------------------------------------------------------------------- token set
class PoolingCompressor(Compressor):
    """The compressor without learned parts: level k is the VLM's own tokens average-pooled over
    blocks of level_stride(k)² tokens (the top level: the tokens themselves)."""

    def __init__(self, cfg: CompressorConfig, geometry: Geometry):
        nn.Module.__init__(self)  # Compressor's layout and gathering, none of its convolutions
        self.cfg, self.geometry = cfg, geometry
        self.strides = [geometry.level_stride(k) for k in range(len(geometry.levels))]
        self.pool_proj = nn.ModuleList(nn.Identity() for _ in self.strides)
        self.heads = nn.ModuleList(nn.Identity() for _ in self.strides)
        self._register_layout()


class PassThroughClip(nn.Module):
    """Stage 6 for hf-vlm: the tokens are already the VLM's projected visual tokens. Token-level
    reducers that read CLIP's class attention (VisionZip) get each token's attention from the mean
    token instead (the VLM's own CLS attention is not kept with the cached grid; Qwen2-VL has none)."""

    def __init__(self, dim: int):
        super().__init__()
        self.width = dim

    @property
    def out_dim(self) -> int:
        return self.width

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        pass  # nothing to checkpoint

    def forward(self, ts: TokenSet, cls_attention: bool = False) -> ClipOutput:
        m = ts.mask.unsqueeze(-1).to(ts.tokens.dtype)  # (B, T, 1)
        x = ts.tokens * m
        pooled = x.sum(1) / m.sum(1).clamp(min=1)  # (B, D)
        attn = None
        if cls_attention:
            logits = (x @ pooled.unsqueeze(-1)).squeeze(-1) * x.shape[-1] ** -0.5  # (B, T)
            attn = logits.float().masked_fill(~ts.mask, float("-inf")).softmax(-1)
        return ClipOutput(tokens=x, pooled=pooled, cls_attention=attn)


class IdentityAdapter(nn.Module):
    """Stage 7 for hf-vlm: no adaptation (training-free); the tokens pass as they are."""

    def forward(self, tokens: torch.Tensor, levels: torch.Tensor, mask: torch.Tensor) -> AdapterOutput:
        m = mask.to(tokens.dtype)
        return AdapterOutput(tokens=tokens * m.unsqueeze(-1), quality=m, gate=tokens.new_zeros(()))
