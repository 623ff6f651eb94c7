"""Build an ARR-COC model from a PipelineConfig: each stage from its own config, widths wired
from the stages actually built. The caller's config is never changed: `build` returns the
resolved copy beside the model (that copy is what gets saved next to checkpoints and reports).
A config with a `vlm` section (preset hf-vlm) builds the same ARRCOC around an existing VLM."""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch
from torch import nn

from .adapter import QualityAdapter
from .allocator import Allocator
from ..checkpoint import load_weights
from .clip_tokens import ClipOnTokens, build_visual
from .compressor import Compressor
from .llm import LanguageModel, build_llm
from .model import ARRCOC
from .presets import PipelineConfig
from .projector import Projector
from .query_encoder import build_query_encoder
from .relevance import RelevanceAnalyzer
from .sam_encoder import SamEncoder
from .vlm import VLMVisionTower, check_vlm_weights, load_vlm
from .vlm_llm import VLMLanguageModel
from .vlm_stages import IdentityAdapter, PassThroughClip, PoolingCompressor, VLMQueryEncoder, VLMRelevanceAnalyzer

log = logging.getLogger(__name__)


@dataclass
class Built:
    model: ARRCOC
    config: PipelineConfig  # the config as built: every width wired from the stages actually built


def build_model(cfg: PipelineConfig, load: bool = True) -> ARRCOC:
    """The model of `cfg` (see `build`)."""
    return build(cfg, load).model


def build(cfg: PipelineConfig, load: bool = True) -> Built:
    """Random initialisation is seeded by cfg.seed inside a forked RNG: the same config always
    builds the same weights (the frozen lab SAM and its feature cache depend on it), and the
    caller's random state is left untouched."""
    cfg = copy.deepcopy(cfg)  # _build writes the resolved widths into this copy only
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        model = _build(cfg) if cfg.vlm is None else _build_vlm(cfg)
    if load and cfg.weights:
        if cfg.vlm is not None:
            check_vlm_weights(model, cfg.weights)
        load_weights(model, cfg.weights)
    return Built(model.eval(), cfg)


def _build(cfg: PipelineConfig) -> ARRCOC:
    """Builds the stages in order; writes the widths they resolve into `cfg` (a private copy)."""
    g = cfg.geometry
    sam = SamEncoder(cfg.sam)
    cfg.sam = sam.cfg
    query_encoder = build_query_encoder(cfg.query)
    cfg.relevance.query_dim = cfg.allocator.query_dim = query_encoder.dim
    cfg.relevance.in_dim = cfg.compressor.in_dim = cfg.allocator.feature_dim = sam.out_chans
    visual = build_visual(cfg.clip)
    clip = ClipOnTokens(visual, cfg.compressor.dim)
    cfg.adapter.dim = cfg.projector.in_dim = clip.out_dim
    cfg.adapter.n_levels = len(g.levels)
    cfg.llm.query_dim = query_encoder.dim
    lm, tokenizer = build_llm(cfg.llm)
    llm = LanguageModel(cfg.llm, lm, tokenizer)
    cfg.projector.out_dim = llm.hidden_size
    if cfg.clip.grad_checkpointing:
        clip.set_grad_checkpointing(True)
    return ARRCOC(
        geometry=g,
        sam=sam,
        query_encoder=query_encoder,
        relevance=RelevanceAnalyzer(cfg.relevance, g),
        allocator=Allocator(cfg.allocator, g),
        compressor=Compressor(cfg.compressor, g),
        clip=clip,
        adapter=QualityAdapter(cfg.adapter),
        projector=Projector(cfg.projector),
        llm=llm,
        probes=cfg.probes,
    )


def _build_vlm(cfg: PipelineConfig) -> ARRCOC:
    """hf-vlm: the VLM's vision tower + projector in SAM's place, pass-throughs for CLIP, adapter and
    projector, the VLM's language model as the LLM; the analyzer and the allocator as in every preset,
    at the VLM's width. Writes the widths into `cfg` (a private copy)."""
    g = cfg.geometry
    vlm, processor, tokenizer = load_vlm(cfg.vlm)
    tower = VLMVisionTower(vlm, cfg.vlm.family, g, getattr(processor, "image_processor", None))
    llm = VLMLanguageModel(cfg.vlm, vlm, processor, tokenizer, g)
    query_encoder = VLMQueryEncoder(build_query_encoder(cfg.query), vlm.get_input_embeddings(), tokenizer)
    width = cfg.vlm.hidden_size = tower.out_chans
    cfg.relevance.query_dim = cfg.allocator.query_dim = query_encoder.dim
    cfg.relevance.in_dim = cfg.compressor.in_dim = cfg.allocator.feature_dim = width
    cfg.compressor.dim = cfg.adapter.dim = cfg.projector.in_dim = cfg.projector.out_dim = width
    cfg.compressor.learned_heads = False
    cfg.adapter.n_levels = len(g.levels)
    return ARRCOC(
        geometry=g,
        sam=tower,
        query_encoder=query_encoder,
        relevance=VLMRelevanceAnalyzer(cfg.relevance, g),
        allocator=Allocator(cfg.allocator, g),
        compressor=PoolingCompressor(cfg.compressor, g),
        clip=PassThroughClip(width),
        adapter=IdentityAdapter(),
        projector=nn.Identity(),
        llm=llm,
        probes=cfg.probes,
    )
