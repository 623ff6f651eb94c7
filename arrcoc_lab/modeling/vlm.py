"""Stage 1 for existing VLMs (the `hf-vlm` preset): a Hugging Face VLM folder of the LLaVA family
(LlavaForConditionalGeneration) or the Qwen2-VL family (Qwen2VLForConditionalGeneration) gives the
patch grid that SAM gives in the other presets; its language model answers (vlm_llm.py).

  pixels (B, 3, S, S) ─ the VLM's normalisation ─ its vision tower ─ its projector ─► F (B, H, G, G)

F holds the visual tokens the VLM's LLM would read, already in the LLM's embedding space (width H):
LLaVA: one token per vision patch (the CLS token dropped, as vision_feature_select_strategy
"default" does); Qwen2-VL: one token per 2×2 patches, after its PatchMerger. The geometry's "patch"
is one such token, so `full` sends the VLM's own number of image tokens, and a lower LOD level
sends a block of them average-pooled (the LLM then reads fewer visual tokens, as with FastV or
VisionZip). S is fixed per pipeline: LLaVA's vision image_size; for Qwen2-VL (dynamic resolution)
the preset's image_size (default 672 px = 24×24 tokens, LLaVA-1.5's 576).

The VLM is frozen and external: its weights load from its folder and never go into our files
(state-dict hooks leave them out). A digest of it (`vlm_digest`) is stored instead, so weights
trained on one VLM are refused for another and cached features are keyed by the VLM.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, InputError
from .geometry import Geometry


@dataclass
class VLMConfig:
    path: str | None = None  # local Hugging Face VLM folder (save_pretrained layout, processor/tokenizer beside it)
    family: str = "llava"  # "llava" | "qwen2_vl": the folder's config.json model_type
    dtype: str = "auto"  # weights dtype: auto (the folder's), float32, bfloat16, float16
    hidden_size: int = 4096  # the LLM's width = the visual tokens' width (read from config.json)
    max_new_tokens: int = 32  # greedy answer length cap
    prompt: str = ""  # a text with {image} and {question}; "" = the processor's chat template (else the family's)


# The supported families: the transformers class, and the prompt used when the folder has no chat template.
FAMILIES = {
    "llava": dict(cls="LlavaForConditionalGeneration", prompt="USER: {image}\n{question} ASSISTANT:"),
    "qwen2_vl": dict(cls="Qwen2VLForConditionalGeneration",
                     prompt="<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                            "<|vision_start|>{image}<|vision_end|>{question}<|im_end|>\n<|im_start|>assistant\n"),
}
DTYPES = ("auto", "float32", "bfloat16", "float16")
QWEN_DEFAULT_TOKENS = 24  # Qwen2-VL without image_size: 24×24 merged tokens (672 px), as many as LLaVA-1.5's 576
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class VLMSpec:
    family: str
    hidden_size: int  # LLM width
    token_px: int  # pixels per visual token side (LLaVA: the patch; Qwen2-VL: patch × spatial merge)
    image_size: int  # square model input side


def read_vlm_config(path: str | Path):
    """The folder's transformers config (no weights read); a family this preset does not know is an InputError."""
    from transformers import AutoConfig

    p = Path(path).expanduser()
    if not (p / "config.json").is_file():
        raise CheckpointError(f"VLM folder {p} has no config.json; expected a Hugging Face save_pretrained() folder "
                              "of a LLaVA or Qwen2-VL model")
    try:
        cfg = AutoConfig.from_pretrained(p, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"cannot read the VLM config in {p}: {e}") from e
    if cfg.model_type not in FAMILIES:
        raise InputError(f"VLM in {p} is a {cfg.model_type!r} model; hf-vlm supports {sorted(FAMILIES)} "
                         f"({', '.join(f['cls'] for f in FAMILIES.values())})")
    return cfg


def inspect_vlm(path: str | Path, image_size: int | None = None) -> VLMSpec:
    """Family, widths and input size of a VLM folder, from its config.json alone."""
    cfg = read_vlm_config(path)
    v = cfg.vision_config
    if cfg.model_type == "llava":
        token = v.patch_size
        native = (v.image_size // token) * token
        if image_size not in (None, native):
            raise InputError(f"this LLaVA's vision tower reads {native}² images (its position embeddings); "
                             f"image_size={image_size} is not accepted")
        size = native
    else:
        token = v.patch_size * v.spatial_merge_size
        size = image_size or QWEN_DEFAULT_TOKENS * token
        if isinstance(size, bool) or not isinstance(size, int) or size < token or size % token:
            raise InputError(f"image_size must be a positive multiple of {token} (Qwen2-VL: patch {v.patch_size} × "
                             f"merge {v.spatial_merge_size}), got {image_size!r}")
    return VLMSpec(cfg.model_type, cfg.text_config.hidden_size, token, size)


def _roots(c: int) -> list[int]:
    """Token-grid sides of the LOD levels of a c×c-token cell: 1, 2, 4, 8 for 8; 1, 3, 9 for 9."""
    base = 2 if c % 2 == 0 else 3
    roots = [1]
    while roots[-1] * base <= c and c % (roots[-1] * base) == 0:
        roots.append(roots[-1] * base)
    if roots[-1] != c:
        raise InputError(f"cell_patches must be a power of 2 or of 3 (levels pool 2×2 or 3×3 blocks), got {c}")
    return roots


def pick_cell(side: int) -> int:
    """Tokens per cell side for a side×side token grid: the largest power of two ≤ 8 that leaves at
    least 4 cells a side (LLaVA-1.5's 24 → 4: 6×6 cells of 1/4/16 tokens), else a power of 3."""
    for need in (4, 2):
        for c in (8, 4, 2, 9, 3):
            if side % c == 0 and side // c >= need:
                return c
    raise InputError(f"a {side}×{side} token grid has no pooling factor 2, 4, 8, 3 or 9 leaving 2 cells a side; "
                     "pass cell_patches= or another image_size")


def vlm_geometry(image_size: int, token_px: int, cell_patches: int | None = None) -> Geometry:
    """Patch = one visual token of the VLM; cells of c×c tokens; levels pool them 1 … c² per cell.
    Quality modes and the hard-query threshold scale with the minimum as in lab and paper."""
    side = image_size // token_px
    c = cell_patches or pick_cell(side)
    if side % c:
        raise InputError(f"cell_patches {c} does not divide the {side}×{side} token grid")
    levels = tuple(r * r for r in _roots(c))
    low, high = (side // c) ** 2, side * side  # min and full tokens
    fit = lambda x: max(low, min(high, round(x)))
    return Geometry(image_size=image_size, patch_size=token_px, cell_patches=c, levels=levels,
                    quality_budgets={"fast": low, "balanced": fit(2.8125 * low), "accurate": fit(6.25 * low)},
                    hard_query_min_tokens=fit(2.5 * low))


def load_vlm(cfg: VLMConfig):
    """(model, processor or None, tokenizer) from the local folder; nothing downloads."""
    import transformers
    from safetensors import SafetensorError
    from transformers import AutoProcessor, AutoTokenizer

    if not cfg.path:
        raise InputError("preset 'hf-vlm' needs vlm_path=DIR: a local LLaVA or Qwen2-VL folder")
    if cfg.dtype not in DTYPES:
        raise InputError(f"unknown dtype {cfg.dtype!r}; known: {list(DTYPES)}")
    path = Path(cfg.path).expanduser()
    family = read_vlm_config(path).model_type
    if family != cfg.family:
        raise CheckpointError(f"VLM in {path} is a {family!r} model, but the config names {cfg.family!r}")
    cls = getattr(transformers, FAMILIES[family]["cls"])
    dtype = "auto" if cfg.dtype == "auto" else getattr(torch, cfg.dtype)
    try:
        model, info = cls.from_pretrained(path, local_files_only=True, dtype=dtype, output_loading_info=True)
    except (OSError, RuntimeError, ValueError, SafetensorError) as e:
        raise CheckpointError(f"cannot load the VLM from {path}: weights missing, truncated or not matching its "
                              f"config.json ({e})") from e
    bad = {k: sorted(v)[:3] for k, v in info.items() if k in ("missing_keys", "mismatched_keys") and v}
    if bad:
        raise CheckpointError(f"VLM weights in {path} do not match its config.json: {bad}")
    try:
        processor = AutoProcessor.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError, ImportError):
        processor = None  # no processor saved: the tokenizer alone, the family's prompt, CLIP's normalisation
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is None and processor is not None and hasattr(processor, "convert_tokens_to_ids"):
        processor, tokenizer = None, processor  # AutoProcessor fell back to the tokenizer
    if tokenizer is None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, TypeError) as e:
            raise CheckpointError(f"no tokenizer in {path}: save the processor (or tokenizer) beside the model") from e
    model.requires_grad_(False)
    return model.eval(), processor, tokenizer


def vlm_digest(vlm: nn.Module) -> torch.Tensor:
    """(32,) uint8 sha256 of the VLM's weight names and shapes and of the signs of each weight's
    first 256 values: the same checkpoint gives the same digest in any dtype, device or folder."""
    h = hashlib.sha256(vlm.config.model_type.encode())
    for k, v in sorted(vlm.state_dict().items()):
        h.update(f"{k}{tuple(v.shape)}".encode())
        h.update((v.detach().reshape(-1)[:256] > 0).cpu().numpy().tobytes())
    return torch.frombuffer(bytearray(h.digest()), dtype=torch.uint8).clone()


def check_vlm_weights(model: nn.Module, path: str | Path) -> None:
    """Refuse weights of ours trained on another VLM (their stored digest differs), before loading."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            stored = f.get_tensor("sam.vlm_digest") if "sam.vlm_digest" in f.keys() else None
    except (SafetensorError, OSError, ValueError):
        return  # unreadable: load_weights reports it
    if stored is not None and not torch.equal(stored.cpu(), model.sam.vlm_digest.cpu()):
        raise CheckpointError(f"weights {path} were trained on another VLM than {model.llm.cfg.path} (their "
                              "vlm_digest differs); hf-vlm weights only load onto the VLM they were trained with")


def drop_external(prefix_name: str):
    """A state-dict hook that leaves the VLM's own tensors (under `prefix_name`) out of our files."""
    def hook(module, state, prefix, local_metadata):
        for k in [k for k in state if k.startswith(prefix + prefix_name)]:
            del state[k]
    return hook


def qwen_patches(x: torch.Tensor, patch: int, merge: int, temporal: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Qwen2VLImageProcessor's patchify of normalised square images: x (B, 3, S, S) →
    (B·g², 3·temporal·patch²) rows in merge-block order, and grid_thw (B, 3) = (1, g, g)."""
    B, C, S, _ = x.shape
    g = S // patch
    p = x.reshape(B, C, g // merge, merge, patch, g // merge, merge, patch)
    p = p.permute(0, 2, 5, 3, 6, 1, 4, 7)  # (B, g/m, g/m, m, m, C, patch, patch)
    p = p.unsqueeze(6).expand(-1, -1, -1, -1, -1, -1, temporal, -1, -1)  # a still image: its frame repeated
    flat = p.reshape(B * g * g, C * temporal * patch * patch)
    return flat, torch.tensor([[1, g, g]] * B, device=x.device)


class VLMVisionTower(nn.Module):
    """Frozen: pixels (B, 3, S, S) in [0, 255] → the VLM's projected visual tokens as a grid F (B, H, G, G)."""

    def __init__(self, vlm: nn.Module, family: str, geometry: Geometry, image_processor=None):
        super().__init__()
        self.vlm, self.family, self.geometry = vlm, family, geometry
        ip = image_processor
        mean = getattr(ip, "image_mean", None) or CLIP_MEAN
        std = getattr(ip, "image_std", None) or CLIP_STD
        if getattr(ip, "do_normalize", True) is False:
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        scale = getattr(ip, "rescale_factor", None) or 1 / 255
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1) / scale, persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1) / scale, persistent=False)
        self.register_buffer("vlm_digest", vlm_digest(vlm))  # stored in our files instead of the VLM
        self.register_state_dict_post_hook(drop_external("vlm."))

    def train(self, mode: bool = True):
        return super().train(False)  # frozen: stays in eval mode whatever the caller asks

    @property
    def out_chans(self) -> int:
        return self.vlm.config.text_config.hidden_size

    @torch.no_grad()
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (B, 3, S, S) in [0, 255] → F (B, H, G, G) float32, G = S / token_px."""
        B, G = pixels.shape[0], self.geometry.patches_per_side
        x = (pixels - self.pixel_mean) / self.pixel_std  # the image processor's rescale + normalise
        if self.family == "qwen2_vl":
            v = self.vlm.config.vision_config
            flat, thw = qwen_patches(x, v.patch_size, v.spatial_merge_size, v.temporal_patch_size)
            out = self.vlm.model.get_image_features(flat.to(self.vlm.model.visual.dtype), thw)
        else:
            out = self.vlm.model.get_image_features(pixel_values=x.to(self.vlm.model.vision_tower.dtype))
        tokens = torch.stack(list(out.pooler_output))  # B × (N, H) -> (B, N, H)
        if tokens.shape[1] == G * G + 1:  # vision_feature_select_strategy "full" keeps CLIP's CLS: not on the grid
            tokens = tokens[:, 1:]
        return tokens.float().view(B, G, G, -1).permute(0, 3, 1, 2)  # (B, G², H) -> (B, H, G, G)
