"""Presets: small builder functions in a registry, each returning a resolved PipelineConfig.

  lab    CPU-sized, the real architectures, paper ratios (1 token/cell = 1/4 of uniform = 1/64 of full)
  paper  DeepSeek-OCR geometry, official SAM / open_clip / Hugging Face checkpoints from local paths
  tiny   the smallest working configuration, for tests
  hf-vlm an existing Hugging Face VLM (LLaVA, Qwen2-VL) from a local folder: its vision tower gives
         the patch grid, its LLM answers (modeling/vlm.py)
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Callable

from .adapter import AdapterConfig
from .allocator import AllocatorConfig
from .clip_tokens import ClipConfig
from .compressor import CompressorConfig
from ..errors import InputError
from .geometry import Geometry
from .llm import LLMConfig
from .projector import ProjectorConfig
from .query_encoder import QueryEncoderConfig
from .relevance import RelevanceConfig
from .sam_encoder import SamEncoderConfig
from .vlm import DTYPES, VLMConfig, inspect_vlm, vlm_geometry


@dataclass
class PipelineConfig:
    preset: str = "lab"  # name of the builder that made this config
    geometry: Geometry = field(default_factory=Geometry)
    sam: SamEncoderConfig = field(default_factory=SamEncoderConfig)
    query: QueryEncoderConfig = field(default_factory=QueryEncoderConfig)
    relevance: RelevanceConfig = field(default_factory=RelevanceConfig)
    allocator: AllocatorConfig = field(default_factory=AllocatorConfig)
    compressor: CompressorConfig = field(default_factory=CompressorConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    weights: str | None = None  # safetensors file of our trained weights
    probes: bool = True  # interface checks at every stage boundary
    seed: int = 0  # seed of the random initialisation (the lab SAM stays at its seeded init, frozen, unless the optional encoder phase pre-trains it)
    vlm: VLMConfig | None = None  # hf-vlm: the wrapped VLM; None (and absent from the JSON) for the other presets

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        if d["vlm"] is None:  # configs of the other presets (and the runs that recorded them) stay as they were
            del d["vlm"]
        return {k: (v.to_dict() if isinstance(v, Geometry) else asdict(v) if is_dataclass(v) else v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "PipelineConfig":
        kinds = {f.name: f.default_factory for f in fields(cls) if f.default_factory is not None} | {"vlm": VLMConfig}
        kwargs = {}
        for k, v in d.items():
            if k not in {f.name for f in fields(cls)}:
                raise InputError(f"unknown config section {k!r}; known: {[f.name for f in fields(cls)]}")
            if k in kinds and isinstance(v, dict):
                proto = kinds[k]()
                known = {f.name for f in fields(proto)}
                bad = set(v) - known
                if bad:
                    raise InputError(f"unknown field(s) {sorted(bad)} in config section {k!r}; known: {sorted(known)}")
                v = type(proto)(**{n: tuple(x) if isinstance(x, list) and n not in ("quality_budgets",) else x
                                   for n, x in v.items()})
            kwargs[k] = v
        return cls(**kwargs)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))

    @classmethod
    def load(cls, path: str | Path) -> "PipelineConfig":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise InputError(f"cannot read config file {path}: {e}") from e


PRESETS: dict[str, Callable[..., PipelineConfig]] = {}


def register(fn: Callable[..., PipelineConfig]) -> Callable[..., PipelineConfig]:
    PRESETS[fn.__name__] = fn
    return fn


def get_preset(name: str, **kwargs) -> PipelineConfig:
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name](**kwargs)


def _wire(cfg: PipelineConfig, feat: int, width: int, hidden: int) -> PipelineConfig:
    """Make every stage's input width match the previous stage's output."""
    cfg.relevance.in_dim = cfg.compressor.in_dim = cfg.allocator.feature_dim = feat
    cfg.compressor.dim = cfg.adapter.dim = cfg.projector.in_dim = width
    cfg.projector.out_dim = hidden
    cfg.adapter.n_levels = len(cfg.geometry.levels)
    return cfg


@register
def lab() -> PipelineConfig:
    """256² input, patch 8 → 32×32 patches, 8×8-patch cells → 4×4 cells, levels 1/4/16/64:
    16 tokens (gist) … 64 (uniform 16×) … 1024 (full). SAM features of the training set take
    minutes on 2 CPU cores (~0.07 s/image)."""
    g = Geometry(image_size=256, patch_size=8, cell_patches=8, levels=(1, 4, 16, 64),
                 quality_budgets={"fast": 16, "balanced": 45, "accurate": 100}, hard_query_min_tokens=40)
    cfg = PipelineConfig(
        preset="lab", geometry=g,
        sam=SamEncoderConfig(img_size=256, patch_size=8, embed_dim=192, depth=4, num_heads=4,
                             global_attn_indexes=(1, 3), window_size=8, out_chans=128),
        query=QueryEncoderConfig(kind="minilm"),
        relevance=RelevanceConfig(dim=96, heads=4),
        # exponent chosen on SceneBench val with the trained weights (lift 3.38, query dependence 0.79
        # vs 3.09 / 0.77 at 0.5 and 3.47 / 0.79 at 1.0; 0.75 keeps diminishing returns)
        allocator=AllocatorConfig(utility_exponent=0.75),
        # tokens in raster order of their centres, as a VLM reads its grid: a sign's line of text stays
        # one run in the LLM's sequence, where cell-major order cut every sign at a cell border
        compressor=CompressorConfig(order="raster"),
        # CLIP from scratch starts as a pass-through (reports/lab/probe: a scrambling start lost shape)
        # fixed 2-D sin-cos positions (a trained random one stayed ~1/20 of a token), scaled to norm 1
        # a token: at norm 8 they outweighed the tokens' content and the LLM did not start to read
        # (reports/lab/RUN.md, session 13)
        clip=ClipConfig(image_size=256, patch_size=8, width=128, layers=4, heads=4, output_dim=128,
                        pos_embed="sin_cos_2d", pos_scale=0.125, zero_init_residual=True),
        # the adapter starts as the identity (gate sigmoid(-4) = 0.02): a random normaliser at gate 0.5
        # held back the LLM's use of the image (reports/lab/RUN.md)
        adapter=AdapterConfig(heads=4, gate_init=-4.0),
        # the LLM also reads the question through MiniLM (issue 15: phrasings never seen in training)
        llm=LLMConfig(hidden_size=128, layers=4, heads=4, kv_heads=2, intermediate_size=384, max_positions=2048,
                      question_embedding=True),
    )
    return _wire(cfg, feat=128, width=128, hidden=128)


@register
def paper(sam_checkpoint: str | None = None, sam_variant: str = "vit_b", clip_model: str = "ViT-L-14",
          clip_pretrained: str | None = None, llm_path: str | None = None, llm_hidden: int | None = None,
          weights: str | None = None, **geometry) -> PipelineConfig:
    """DeepSeek-OCR geometry: 1024², SAM ViT-B/L/H patch 16 → 64×64 patches, 8×8-patch cells → 64 cells,
    levels 1/4/16/64: 64 … 256 (uniform 16×, DeepSeek-OCR Base) … 4096 (full). CLIP ViT-L/14 on the
    tokens, any Hugging Face causal LM directory. All paths are local; nothing downloads."""
    g = Geometry(**geometry)
    cfg = PipelineConfig(
        preset="paper", geometry=g,
        sam=SamEncoderConfig(variant=sam_variant, img_size=g.image_size, patch_size=g.patch_size,
                             checkpoint=sam_checkpoint),
        clip=ClipConfig(model=clip_model, pretrained=clip_pretrained),
        llm=LLMConfig(path=llm_path, max_new_tokens=32),
        weights=weights,
    )
    return _wire(cfg, feat=256, width=1024, hidden=llm_hidden or 1024)


@register
def tiny() -> PipelineConfig:
    """128² input, patch 8 → 16×16 patches, 2×2 cells, levels 1/4/16/64: 4 … 16 … 256 tokens.
    Every stage at a toy width, with a tiny random query encoder: for shape and behaviour tests."""
    g = Geometry(image_size=128, patch_size=8, cell_patches=8, levels=(1, 4, 16, 64),
                 quality_budgets={"fast": 4, "balanced": 12, "accurate": 25}, hard_query_min_tokens=10)
    cfg = PipelineConfig(
        preset="tiny", geometry=g,
        sam=SamEncoderConfig(img_size=128, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                             global_attn_indexes=(1,), window_size=4, out_chans=16),
        query=QueryEncoderConfig(kind="minilm", pretrained=False),
        relevance=RelevanceConfig(query_dim=32, dim=16, heads=2, n_global=2),
        allocator=AllocatorConfig(query_dim=32, tier_hidden=8),
        clip=ClipConfig(image_size=128, patch_size=8, width=32, layers=2, heads=2, output_dim=32),
        adapter=AdapterConfig(heads=2),
        llm=LLMConfig(hidden_size=32, layers=2, heads=2, kv_heads=1, intermediate_size=64, max_positions=1024,
                      max_new_tokens=6),
    )
    return _wire(cfg, feat=16, width=32, hidden=32)


def hf_vlm(vlm_path: str | None = None, image_size: int | None = None, cell_patches: int | None = None,
           dtype: str = "auto", max_new_tokens: int = 32, prompt: str = "",
           weights: str | None = None) -> PipelineConfig:
    """An existing VLM from a local Hugging Face folder (LlavaForConditionalGeneration or
    Qwen2VLForConditionalGeneration): its vision tower + projector give the token grid, its LLM
    answers. Geometry from its vision config: one patch = one of its visual tokens (LLaVA-1.5 336²,
    patch 14 → 24×24; Qwen2-VL at image_size, default 672 → 24×24 merged tokens), cells of 4×4
    tokens there (6×6 cells, levels 1/4/16: 36 … 576 = the VLM's own count). `weights`: our trained
    analyzer (phase 1-A) for this VLM."""
    if not vlm_path:
        raise InputError("preset 'hf-vlm' needs vlm_path=DIR: a local Hugging Face LLaVA or Qwen2-VL folder "
                         "(load_pipeline('hf-vlm', vlm_path=DIR))")
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; known: {list(DTYPES)}")
    path = Path(vlm_path).expanduser().resolve()  # a saved config finds the VLM from anywhere
    spec = inspect_vlm(path, image_size)
    cfg = PipelineConfig(
        preset="hf-vlm", geometry=vlm_geometry(spec.image_size, spec.token_px, cell_patches),
        query=QueryEncoderConfig(kind="minilm"),
        relevance=RelevanceConfig(dim=128, heads=4),
        compressor=CompressorConfig(learned_heads=False),
        vlm=VLMConfig(path=str(path), family=spec.family, dtype=dtype, hidden_size=spec.hidden_size,
                      max_new_tokens=max_new_tokens, prompt=prompt),
        weights=weights,
    )
    return _wire(cfg, feat=spec.hidden_size, width=spec.hidden_size, hidden=spec.hidden_size)


PRESETS["hf-vlm"] = hf_vlm  # a name with a hyphen: registered by hand
