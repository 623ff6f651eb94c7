"""Training-only auxiliary — the region reader: reads the answer's bytes straight from the visual
tokens (the projector's output, what the LLM sees) of the question's target region.

Why: trained on the answer loss alone, the lab downstream learnt to pass colour and drop shape
(reports/lab/probe: landmark kind 92 % from SAM features, chance after CLIP), so it never read
text. A small cross-attention decoder that must spell the answer from the target's tokens gives
the compressor, CLIP, adapter and projector a direct gradient to keep character shape where the
LLM reads it — the localised-OCR objective of document VLM pre-training (Donut, Pix2Struct), with
the oracle target region standing in for the question (the reader sees no text). It is discarded
after training: inference runs the LLM alone.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

END = 256  # class after the last byte; 0..255 are UTF-8 bytes
IGNORE = -100


@dataclass
class ReaderConfig:
    max_bytes: int = 16  # answer bytes spelt (longer answers are cut; END follows the last kept byte)
    layers: int = 2  # decoder layers (learned byte-slot queries cross-attending to the tokens)
    heads: int = 4


@dataclass
class ReaderOutput:
    loss: torch.Tensor  # (B,) per-sample byte cross-entropy, 0 where the sample has no target region
    valid: torch.Tensor  # (B,) bool, True where the sample was read (it has a target region)
    byte_accuracy: torch.Tensor  # () share of target bytes (END included) predicted right


class RegionReader(nn.Module):
    def __init__(self, dim: int, cfg: ReaderConfig | None = None):
        super().__init__()
        cfg = cfg or ReaderConfig()
        if dim % cfg.heads:
            raise ValueError(f"reader heads ({cfg.heads}) must divide the token width ({dim})")
        self.cfg = cfg
        self.slots = nn.Parameter(torch.randn(cfg.max_bytes + 1, dim) * 0.02)  # one query per byte slot + END
        layer = nn.TransformerDecoderLayer(dim, cfg.heads, dim_feedforward=2 * dim, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, cfg.layers)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, END + 1)

    def targets(self, answers: list[str], device) -> torch.Tensor:
        """(B, max_bytes + 1) byte ids, END after the last kept byte, IGNORE after that."""
        K = self.cfg.max_bytes
        out = torch.full((len(answers), K + 1), IGNORE, dtype=torch.long)
        for i, a in enumerate(answers):
            b = list(a.encode("utf-8")[:K])
            out[i, :len(b) + 1] = torch.tensor(b + [END])
        return out.to(device)

    def forward(self, visual: torch.Tensor, region: torch.Tensor, answers: list[str]) -> ReaderOutput:
        """visual (B, T, H) projected tokens; region (B, T) bool, True at real tokens of the target."""
        valid = region.any(1)  # (B,)
        if not valid.any():
            zero = visual.sum() * 0.0  # keeps the graph (DDP needs every parameter touched)
            return ReaderOutput(visual.new_zeros(len(answers)) + zero, valid, zero.detach())
        v = visual[valid]  # (B', T, H)
        q = self.slots.to(v.dtype).expand(v.shape[0], -1, -1)  # (K+1, H) -> (B', K+1, H)
        x = self.decoder(q, v, memory_key_padding_mask=~region[valid])  # (B', K+1, H)
        logits = self.head(self.norm(x)).float()  # (B', K+1, 257)
        tgt = self.targets([a for a, ok in zip(answers, valid.tolist()) if ok], v.device)  # (B', K+1)
        ce = F.cross_entropy(logits.transpose(1, 2), tgt, ignore_index=IGNORE, reduction="none")  # (B', K+1)
        seen = tgt != IGNORE
        per = (ce * seen).sum(1) / seen.sum(1).clamp(min=1)  # (B',)
        loss = visual.new_zeros(len(answers), dtype=per.dtype).masked_scatter(valid, per)  # (B,)
        acc = ((logits.argmax(-1) == tgt) & seen).sum() / seen.sum().clamp(min=1)
        return ReaderOutput(loss, valid, acc.detach())


    @torch.no_grad()
    def decode(self, visual: torch.Tensor, region: torch.Tensor) -> list[str]:
        """Greedy reading: the text each sample's byte slots spell up to END ('' where END comes
        first or the sample has no region)."""
        q = self.slots.to(visual.dtype).expand(visual.shape[0], -1, -1)  # (B, K+1, H)
        x = self.decoder(q, visual, memory_key_padding_mask=~region)  # (B, K+1, H)
        ids = self.head(self.norm(x)).argmax(-1).tolist()  # (B, K+1)
        out = []
        for row, ok in zip(ids, region.any(1).tolist()):
            kept = row[:row.index(END)] if END in row else row
            out.append(bytes(kept).decode("utf-8", "replace") if ok else "")
        return out


def region_tokens(cells: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, T) bool: tokens whose cell (B, T raster index, -1 at padding) lies in the target
    cells (B, Hc, Wc; 1 inside, 0 outside, NaN where the sample has no region)."""
    flat = torch.nan_to_num(target, nan=0.0).flatten(1) > 0  # (B, Hc, Wc) -> (B, Hc·Wc)
    inside = flat.gather(1, cells.clamp(min=0))  # (B, T)
    return inside & (cells >= 0)
