"""Stage 6 — CLIP on tokens: open_clip's VisionTransformer run on a variable-length token set.

The patch embedding (conv1) is bypassed: tokens arrive from the compressor. Each token gets
CLIP's learned positional embedding *sampled at its centre* (bilinear on the embedding grid), so
a 1-token cell and a 64-token cell sit where they belong. Batches of different lengths are padded
and the padding is masked out of attention (open_clip's Transformer takes an additive mask).
"""
from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .compressor import TokenSet
from ..errors import CheckpointError, InputError

log = logging.getLogger(__name__)

POS_EMBEDS = ("learnable", "sin_cos_2d")  # open_clip's VisionTransformer pos_embed_type


@dataclass
class ClipConfig:
    model: str | None = None  # open_clip model name (paper: "ViT-L-14"); None = build from the dims below
    pretrained: str | None = None  # local open_clip checkpoint file for `model`
    image_size: int = 224  # grid of the positional embedding = image_size / patch_size
    patch_size: int = 14
    width: int = 1024
    layers: int = 24
    heads: int = 16
    mlp_ratio: float = 4.0
    output_dim: int = 768
    grad_checkpointing: bool = False  # trade compute for memory when training
    pos_embed: str = "learnable"  # built from dims only: open_clip's pos_embed_type, "learnable" (random, norm 1 a
                                  # token: small beside the compressor's tokens) or "sin_cos_2d" (fixed MAE-style 2-D
                                  # sin-cos, a smooth code of where each token sits that the LLM can read from the start)
    pos_scale: float = 1.0  # built from dims only: the sin-cos embedding multiplied by this (norm 8 a token at width
                            # 128 outweighed the compressor tokens' content, and the LLM did not start to read)
    zero_init_residual: bool = False  # built from dims only: residual branches start at zero, so CLIP starts as a
                                      # pass-through of the compressor tokens (it keeps their shape information
                                      # while the LLM learns to read it, instead of scrambling it first)


@dataclass
class ClipOutput:
    tokens: torch.Tensor  # (B, T, W) contextual tokens (after ln_post), zero at padding
    pooled: torch.Tensor  # (B, E) class token projected to CLIP's embedding space
    cls_attention: torch.Tensor | None = None  # (B, T) class-token attention over the tokens in the last block
                                               # (head mean; only when asked: VisionZip's dominant-token score)


def create_openclip(name: str, pretrained: str | None) -> nn.Module:
    """A named open_clip model, with its weights from a local checkpoint file (None = random).
    Nothing downloads: pretrained tags ('openai', ...) and 'hf-hub:' names are refused."""
    import open_clip
    from safetensors import SafetensorError

    if name.startswith("hf-hub:"):
        raise CheckpointError(f"open_clip model {name!r} would download from the Hugging Face Hub; give a model "
                              "name (e.g. 'ViT-L-14') and a local checkpoint file")
    if pretrained and not Path(pretrained).is_file():
        raise CheckpointError(f"open_clip checkpoint not found: {pretrained} (a local file is required; "
                              "pretrained tags such as 'openai' would download and are not accepted)")
    try:
        return open_clip.create_model(name, pretrained=pretrained, load_weights=bool(pretrained))
    except (RuntimeError, OSError, EOFError, KeyError, StopIteration, pickle.UnpicklingError, SafetensorError) as e:
        raise CheckpointError(f"cannot load open_clip model {name!r} from {pretrained}: the checkpoint is truncated, "
                              f"not a weights-only torch/safetensors file, or for a different model ({e})") from e


def build_visual(cfg: ClipConfig) -> nn.Module:
    """An open_clip VisionTransformer: from a named model + local checkpoint, or from dims."""
    from open_clip.transformer import VisionTransformer

    if cfg.model:
        return create_openclip(cfg.model, cfg.pretrained).visual
    if cfg.pos_embed not in POS_EMBEDS:
        raise InputError(f"unknown CLIP pos_embed {cfg.pos_embed!r}; known: {list(POS_EMBEDS)}")
    visual = VisionTransformer(image_size=cfg.image_size, patch_size=cfg.patch_size, width=cfg.width,
                               layers=cfg.layers, heads=cfg.heads, mlp_ratio=cfg.mlp_ratio, output_dim=cfg.output_dim,
                               pos_embed_type=cfg.pos_embed)
    if cfg.pos_scale != 1.0:
        if cfg.pos_embed != "sin_cos_2d":
            raise InputError(f"CLIP pos_scale scales the fixed sin_cos_2d embedding; got pos_embed {cfg.pos_embed!r}")
        with torch.no_grad():
            visual.positional_embedding.mul_(cfg.pos_scale)
    if cfg.zero_init_residual:
        for block in visual.transformer.resblocks:  # x + attn(ln(x)) + mlp(ln(x)) with both branches 0 at start
            for proj in (block.attn.out_proj, block.mlp.c_proj):
                nn.init.zeros_(proj.weight)
                nn.init.zeros_(proj.bias)
    return visual


class ClipOnTokens(nn.Module):
    def __init__(self, visual: nn.Module, in_dim: int):
        super().__init__()
        self.visual = visual
        self.width = visual.class_embedding.shape[-1]
        self.heads = visual.transformer.resblocks[0].attn.num_heads
        self.input_proj = nn.Identity() if in_dim == self.width else nn.Linear(in_dim, self.width)
        visual.conv1.requires_grad_(False)  # bypassed: never sees pixels
        # open_clip builds a sin-cos embedding frozen; it stays so when a phase trains CLIP
        self.fixed_positions = not visual.positional_embedding.requires_grad

    def never_trained(self) -> list[nn.Parameter]:
        """Parameters no phase trains: the bypassed patch embedding, and a fixed positional embedding."""
        fixed = [self.visual.positional_embedding] if self.fixed_positions else []
        return list(self.visual.conv1.parameters()) + fixed

    @property
    def out_dim(self) -> int:
        return self.width

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.visual.set_grad_checkpointing(enable)

    def forward(self, ts: TokenSet, cls_attention: bool = False) -> ClipOutput:
        v = self.visual
        x = self.input_proj(ts.tokens) + self.sample_positions(ts.positions)  # (B, T, W)
        cls = (v.class_embedding + v.positional_embedding[0]).to(x.dtype)
        x = torch.cat([cls.expand(x.shape[0], 1, -1), x], 1)  # (B, T, W) -> (B, 1+T, W)
        x = v.ln_pre(x)
        mask = self.attention_mask(ts.mask, x.dtype)
        last_in = {}
        hook = (v.transformer.resblocks[-1].register_forward_pre_hook(lambda m, args: last_in.update(x=args[0]))
                if cls_attention else None)
        try:
            x = v.transformer(x, attn_mask=mask)
        finally:
            if hook is not None:
                hook.remove()
        x = v.ln_post(x)
        pooled = x[:, 0] @ v.proj if v.proj is not None else x[:, 0]
        attn = self.class_attention(last_in["x"], mask) if cls_attention else None
        return ClipOutput(tokens=x[:, 1:] * ts.mask.unsqueeze(-1), pooled=pooled, cls_attention=attn)

    def class_attention(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Attention of the class token over the tokens in the last block (head mean), from that
        block's input x (B, 1+T, W) and additive mask (B·H, 1+T, 1+T): one query row and the keys,
        so it costs one key projection (no values, no output)."""
        blk = self.visual.transformer.resblocks[-1]
        attn = blk.attn
        B, L, W = x.shape
        H = attn.num_heads
        h = blk.ln_1(x)
        wq, wk, _ = attn.in_proj_weight.chunk(3)
        bq, bk, _ = attn.in_proj_bias.chunk(3) if attn.in_proj_bias is not None else (None, None, None)
        q = F.linear(h[:, :1], wq, bq).view(B, 1, H, W // H).transpose(1, 2)  # (B, 1, W) -> (B, H, 1, d)
        k = F.linear(h, wk, bk).view(B, L, H, W // H).transpose(1, 2)  # (B, L, W) -> (B, H, L, d)
        logits = q @ k.transpose(-1, -2) * (W // H) ** -0.5 + mask.view(B, H, L, L)[:, :, :1]  # (B, H, 1, L)
        return logits.softmax(-1).mean(1)[:, 0, 1:]  # (B, T): head mean, class token's self-attention dropped

    def sample_positions(self, positions: torch.Tensor) -> torch.Tensor:
        """Bilinear sample of the (gh, gw) positional grid at token centres (y, x) ∈ [0, 1]."""
        v = self.visual
        gh, gw = v.grid_size
        grid = v.positional_embedding[1:].T.reshape(1, self.width, gh, gw)  # (gh·gw, W) -> (1, W, gh, gw)
        B, T, _ = positions.shape
        xy = positions.flip(-1) * 2 - 1  # (y, x) in [0,1] -> (x, y) in [-1, 1]; cell k centre → pixel k
        out = F.grid_sample(grid.expand(B, -1, -1, -1).to(positions.dtype), xy.view(B, T, 1, 2),
                            mode="bilinear", align_corners=False, padding_mode="border")  # (B, W, T, 1)
        return out.squeeze(-1).transpose(1, 2)  # (B, W, T, 1) -> (B, T, W)

    def attention_mask(self, mask: torch.Tensor, dtype) -> torch.Tensor:
        """Additive mask (B·heads, 1+T, 1+T) that hides padded keys; the class token is always kept."""
        keep = torch.cat([mask.new_ones(mask.shape[0], 1), mask], 1)  # (B, 1+T)
        add = torch.zeros(keep.shape, dtype=dtype, device=mask.device).masked_fill(~keep, float("-inf"))
        L = keep.shape[1]
        return add[:, None, :].expand(-1, L, -1).repeat_interleave(self.heads, 0)  # (B·H, L, L)
