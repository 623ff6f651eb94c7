"""Stage 1 — frozen SAM ViT encoder: image → patch features F (B, C, Hp, Wp).

Uses segment-anything's own `ImageEncoderViT`. The `paper` preset loads an official
`sam_vit_b/l/h` checkpoint (a `Sam` state dict whose encoder keys start with `image_encoder.`);
the `lab` preset uses a small configuration of the same class.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import torch
from segment_anything.modeling import ImageEncoderViT
from torch import nn

from ..errors import CheckpointError

log = logging.getLogger(__name__)

# The official SAM variants, as segment_anything.build_sam builds them.
SAM_VARIANTS = {
    "vit_b": dict(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11)),
    "vit_l": dict(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)),
    "vit_h": dict(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)),
}
PIXEL_MEAN = (123.675, 116.28, 103.53)  # SAM's normalisation, in [0, 255] pixel units
PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass
class SamEncoderConfig:
    variant: str = "custom"  # "vit_b" | "vit_l" | "vit_h" fill embed_dim/depth/heads/global indexes
    img_size: int = 1024  # input side in pixels
    patch_size: int = 16  # pixels per patch side
    embed_dim: int = 768  # ViT width
    depth: int = 12  # transformer blocks
    num_heads: int = 12  # attention heads
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)  # blocks with global (not windowed) attention
    window_size: int = 14  # windowed-attention side in patches
    out_chans: int = 256  # channels of the neck output, i.e. of F
    checkpoint: str | None = None  # official SAM .pth (whole Sam state dict) to load

    def resolved(self) -> "SamEncoderConfig":
        if self.variant == "custom":
            return self
        if self.variant not in SAM_VARIANTS:
            raise CheckpointError(f"unknown SAM variant {self.variant!r}; known: {sorted(SAM_VARIANTS)} or 'custom'")
        return replace(self, **SAM_VARIANTS[self.variant], window_size=14, out_chans=256)


class SamEncoder(nn.Module):
    """Frozen wrapper: normalises pixels, runs ImageEncoderViT, never trains."""

    def __init__(self, cfg: SamEncoderConfig):
        super().__init__()
        self.cfg = cfg = cfg.resolved()
        self.encoder = ImageEncoderViT(
            img_size=cfg.img_size,
            patch_size=cfg.patch_size,
            embed_dim=cfg.embed_dim,
            depth=cfg.depth,
            num_heads=cfg.num_heads,
            mlp_ratio=4,
            out_chans=cfg.out_chans,
            qkv_bias=True,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=cfg.window_size,
            global_attn_indexes=tuple(cfg.global_attn_indexes),
        )
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(1, 3, 1, 1), persistent=False)
        if cfg.checkpoint:
            load_official_sam(self.encoder, cfg.checkpoint)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        return super().train(False)  # frozen: dropout/norm stay in eval mode whatever the caller asks

    @property
    def out_chans(self) -> int:
        return self.cfg.out_chans

    @torch.no_grad()
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (B, 3, S, S) in [0, 255] → features (B, C, S/p, S/p)."""
        dtype = self.encoder.patch_embed.proj.weight.dtype
        x = ((pixels - self.pixel_mean) / self.pixel_std).to(dtype)
        return self.encoder(x).float()


def load_official_sam(encoder: ImageEncoderViT, path: str | Path) -> None:
    """Load the `image_encoder.*` part of an official segment-anything checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"SAM checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read SAM checkpoint {path}: truncated or not a torch file ({e})") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"SAM checkpoint {path} holds a {type(state).__name__}, expected a Sam state dict")
    prefix = "image_encoder."
    enc_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not enc_state:
        raise CheckpointError(
            f"SAM checkpoint {path} has no '{prefix}*' keys; expected an official sam_vit_b/l/h file (a Sam state dict)"
        )
    check_state_dict(encoder, enc_state, f"SAM checkpoint {path}")
    encoder.load_state_dict(enc_state)
    log.info("loaded SAM image encoder from %s (%d tensors)", path, len(enc_state))


def check_state_dict(module: nn.Module, state: dict, what: str) -> None:
    """Compare keys and shapes before loading so the error lists every mismatch at once."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(f"{len(wrong)} shape mismatches (e.g. {'; '.join(wrong[:3])})")
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
        raise CheckpointError(f"{what} does not match the model configuration: " + ", ".join(parts))
