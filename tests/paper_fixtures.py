"""Small random checkpoints in the exact official formats, for testing the `paper` preset's
loading code path without the real (GB-sized) files and without network.

  SAM        torch.save(Sam.state_dict())               like sam_vit_b_01ec64.pth
  open_clip  torch.save(CLIP.state_dict()) + a model config registered with open_clip.add_model_config
  LLM        Qwen3ForCausalLM.save_pretrained(dir) + tokenizer.save_pretrained(dir)

A plain helper module (not a conftest): test files `from tests import paper_fixtures` and wrap the
builders in fixtures.
"""
from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import torch

# Tiny SAM: the same ImageEncoderViT arguments as segment_anything.build_sam._build_sam, shrunk.
TINY_SAM = dict(img_size=128, patch_size=8, embed_dim=32, depth=2, num_heads=2, global_attn_indexes=(1,),
                window_size=4, out_chans=16)
TINY_CLIP_NAME = "arrcoc-test-tiny-clip"  # registered with open_clip by register_tiny_clip()
TINY_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    # vocab_size must be open_clip's BPE vocabulary: get_tokenizer() returns ids up to 49407
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
TINY_QUALITY_BUDGETS = {"fast": 4, "balanced": 12, "accurate": 25}  # 2×2 cells: 4 … 16 (uniform) … 256


@torch.no_grad()
def perturb(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Add noise to every parameter, so that zero-initialised ones (SAM's pos_embed and rel_pos,
    biases) carry distinctive values and a weight-equality check proves the file was loaded."""
    g = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.add_(0.02 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def make_official_sam(embed_dim: int = TINY_SAM["embed_dim"], out_chans: int = TINY_SAM["out_chans"], seed: int = 0):
    """A complete segment_anything `Sam` (image encoder, prompt encoder, mask decoder), built the way
    build_sam._build_sam builds it, at toy size."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    img, patch = TINY_SAM["img_size"], TINY_SAM["patch_size"]
    encoder = ImageEncoderViT(
        img_size=img, patch_size=patch, embed_dim=embed_dim, depth=TINY_SAM["depth"], num_heads=TINY_SAM["num_heads"],
        mlp_ratio=4, out_chans=out_chans, qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        use_rel_pos=True, window_size=TINY_SAM["window_size"], global_attn_indexes=TINY_SAM["global_attn_indexes"])
    side = img // patch  # SAM: image_embedding_size = image_size // vit_patch_size; prompt_embed_dim = out_chans
    sam = Sam(
        image_encoder=encoder,
        prompt_encoder=PromptEncoder(embed_dim=out_chans, image_embedding_size=(side, side),
                                     input_image_size=(img, img), mask_in_chans=4),
        mask_decoder=MaskDecoder(num_multimask_outputs=3,
                                 transformer=TwoWayTransformer(depth=1, embedding_dim=out_chans, mlp_dim=32, num_heads=2),
                                 transformer_dim=out_chans, iou_head_depth=2, iou_head_hidden_dim=16),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return perturb(sam, seed).eval()


def write_sam_checkpoint(path: Path, **kwargs):
    """Official format: the whole Sam state dict, torch.save'd (keys image_encoder.*, prompt_encoder.*,
    mask_decoder.*). Returns the Sam model."""
    sam = make_official_sam(**kwargs)
    torch.save(sam.state_dict(), path)
    return sam


def register_tiny_clip(config_dir: Path, name: str = TINY_CLIP_NAME, cfg: dict | None = None) -> str:
    """Register a tiny open_clip model config (open_clip.add_model_config), as a user would for a
    custom architecture. Returns the model name."""
    import open_clip

    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / f"{name}.json").write_text(json.dumps(cfg or TINY_CLIP_CFG))
    open_clip.add_model_config(config_dir)
    return name


def write_clip_checkpoint(path: Path, name: str = TINY_CLIP_NAME, seed: int = 1):
    """open_clip's `pretrained=<local file>` format: torch.save(model.state_dict()). Returns the model."""
    import open_clip

    model = perturb(open_clip.create_model(name), seed).eval()
    torch.save(model.state_dict(), path)
    return model


def make_tiny_llm(hidden: int = 32, seed: int = 2):
    from transformers import ByT5Tokenizer, Qwen3Config, Qwen3ForCausalLM

    tokenizer = ByT5Tokenizer()
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, intermediate_size=64, max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
        tie_word_embeddings=True))
    return perturb(model, seed).eval(), tokenizer


def write_llm_dir(path: Path, hidden: int = 32, tokenizer: bool = True):
    """A Hugging Face model directory: model.save_pretrained(dir) + tokenizer.save_pretrained(dir)."""
    model, tok = make_tiny_llm(hidden)
    model.save_pretrained(path)
    if tokenizer:
        tok.save_pretrained(path)
    return model


def _write_marker(path: str) -> None:  # the payload of Malicious: runs only if a pickle is executed
    Path(path).write_text("pickle payload executed")


class Malicious:
    """Unpickling this calls _write_marker(marker): a stand-in for arbitrary code in a .pth file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (_write_marker, (self.marker,))
