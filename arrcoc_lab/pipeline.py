"""The public contract (DESIGN §5):

    pipe = load_pipeline("lab")
    out = pipe(image, "What's the formula on the billboard?", budget=64, policy="arrcoc")
    out.answer, out.num_tokens, out.tokens_per_cell, out.cell_boxes, out.relevance, out.timings

The SAM features of the last few images are cached by content hash, so asking a second question
about the same image (widgets, demo, compare mode) re-runs only what depends on the question.
"""
from __future__ import annotations

import hashlib
import logging
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .modeling.allocator import Policy, stable_seed
from .modeling.build import build
from .modeling.geometry import Geometry
from .errors import CheckpointError, InputError
from .inputs import MAX_PIXELS, check_max_new_tokens, check_query, load_image, parse_budget, to_model_input
from .modeling.model import ARRCOC
from .modeling.presets import PipelineConfig, get_preset
from .modeling.trace import Trace
from .policies import POLICIES, get_policy

log = logging.getLogger(__name__)
LAB_WEIGHTS = Path(__file__).parent / "weights" / "lab" / "model.safetensors"
RANDOM = "random"  # load_pipeline(weights=RANDOM): the preset's seeded random initialisation


class UntrainedWeightsWarning(UserWarning):
    """The pipeline runs on random weights: allocations and answers are not meaningful."""


@dataclass
class PipelineOutput:
    answer: str  # the LLM's greedy answer
    num_tokens: int  # visual tokens sent to the LLM
    tokens_per_cell: np.ndarray  # int (cells_h, cells_w)
    cell_boxes: np.ndarray  # int (cells_h, cells_w, 4): pixel boxes (x0, y0, x1, y1) in the input image
    relevance: np.ndarray  # float (patches_h, patches_w) in [0, 1]
    timings: dict[str, float]  # stage → seconds (sam is ~0 when the features came from the cache)
    cell_relevance: np.ndarray  # float (cells_h, cells_w) in [0, 1]
    levels: np.ndarray  # int (cells_h, cells_w): LOD level index per cell
    query: str  # the query as used (normalised, possibly truncated)
    policy: str
    budget: int  # the budget the allocation was solved under
    tier: str | None  # tier chosen by tier policies (heuristic, learned-tier)
    full_tokens: int  # tokens with no compression (one per patch)
    image_size: tuple[int, int]  # (height, width) of the input image
    trace: Trace  # everything the forward computed

    @property
    def compression_ratio(self) -> float:
        """Full-resolution tokens / tokens used."""
        return self.full_tokens / max(self.num_tokens, 1)


class Pipeline:
    def __init__(self, model: ARRCOC, config: PipelineConfig, cache_size: int = 8, max_pixels: int = MAX_PIXELS):
        self.model, self.config = model, config
        self.max_pixels = max_pixels
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._cache_size = cache_size

    @property
    def geometry(self) -> Geometry:
        return self.config.geometry

    @property
    def device(self) -> torch.device:
        return next(self.model.relevance.parameters()).device

    @property
    def policies(self) -> list[str]:
        return sorted(POLICIES)

    def resolve(self, policy: str, budget=None) -> tuple[Policy, int]:
        """A request's policy and budget, resolved once, before any work: (Policy, tokens).
        The policy is a registered name (case and surrounding spaces ignored); the budget reads by
        the one grammar of `inputs.parse_budget` (None / "default", a quality mode in any case, a
        whole number of tokens as int, float or string). Anything else is an InputError naming
        what is accepted."""
        if not isinstance(policy, str):
            raise InputError(f"policy must be a name (a string), got {type(policy).__name__}; known: {sorted(POLICIES)}")
        if policy not in POLICIES:
            policy = policy.strip().lower()
        p = get_policy(policy)
        return p, self.model.allocator.resolve_budget(p, parse_budget(budget, self.geometry))

    def prepare(self, image) -> tuple[np.ndarray, torch.Tensor, torch.Tensor, str, float]:
        """Validate and encode an image once: (rgb array, pixels, SAM features, content key,
        seconds spent in SAM — 0.0 when the features came from the cache)."""
        rgb = load_image(image, self.max_pixels)
        pixels = to_model_input(rgb, self.geometry.image_size).to(self.device)
        key = hashlib.sha1(pixels.cpu().numpy().tobytes()).hexdigest()
        if key in self._cache:
            self._cache.move_to_end(key)
            return rgb, pixels, self._cache[key], key, 0.0
        t0 = time.perf_counter()
        features = self.model.encode_image(pixels)
        seconds = time.perf_counter() - t0
        self._cache[key] = features
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return rgb, pixels, features, key, seconds

    @torch.no_grad()
    def __call__(self, image, query: str, budget=None, policy: str = "arrcoc",
                 max_new_tokens: int | None = None) -> PipelineOutput:
        query = check_query(query)
        p, budget = self.resolve(policy, budget)  # bad input fails here, before SAM runs
        max_new_tokens = check_max_new_tokens(max_new_tokens)
        rgb, pixels, features, key, sam_seconds = self.prepare(image)
        out = self.model(pixels, [query], policy=p, budget=budget, features=features,
                         seeds=[stable_seed(key, query)], max_new_tokens=max_new_tokens)
        out.trace.timings["sam"] = sam_seconds
        return self._output(out.trace, out.answers[0], rgb, query, p.name)

    def compare(self, image, queries: list[str], **kwargs) -> list[PipelineOutput]:
        """The same image under several questions (encoded once)."""
        if isinstance(queries, (str, bytes)) or not isinstance(queries, (list, tuple)) or not queries:
            raise InputError(f"queries must be a non-empty list of strings, got {type(queries).__name__}")
        for q in queries:  # every question checked before the first one runs
            check_query(q)
        return [self(image, q, **kwargs) for q in queries]

    def _output(self, tr: Trace, answer: str, rgb: np.ndarray, query: str, policy: str) -> PipelineOutput:
        a, r = tr.allocation, tr.relevance
        h, w = rgb.shape[:2]
        return PipelineOutput(
            answer=answer,
            num_tokens=int(a.num_tokens[0]),
            tokens_per_cell=a.tokens_per_cell[0].cpu().numpy(),
            cell_boxes=self.geometry.cell_boxes(h, w),
            relevance=r.patch[0].float().cpu().numpy(),
            timings=dict(tr.timings),
            cell_relevance=r.cell[0].float().cpu().numpy(),
            levels=a.levels[0].cpu().numpy(),
            query=query,
            policy=policy,
            budget=int(a.budgets[0]),
            tier=a.tiers[0],
            full_tokens=self.geometry.full_tokens,
            image_size=(h, w),
            trace=tr,
        )


def load_pipeline(preset: str = "lab", weights: str | Path | None = None, device: str | torch.device | None = None,
                  config: str | Path | PipelineConfig | None = None, **preset_kwargs) -> Pipeline:
    """Build a pipeline. `preset` names a registry entry (lab, paper, tiny); `config` (a JSON file
    or PipelineConfig) replaces the preset; `weights` is our safetensors file, or "random" for the
    preset's seeded initialisation (where training starts; no warning, since it was asked for).
    `lab` loads the shipped weights when they exist and warns when it has to run untrained."""
    device = check_device(device)
    seeded_init = isinstance(weights, str) and weights == RANDOM
    _check_files(weights if not seeded_init else None, config)
    shipped = LAB_WEIGHTS.with_name("config.json")
    if isinstance(config, PipelineConfig):
        cfg = config
    elif config is not None:
        cfg = PipelineConfig.load(config)
    elif preset == "lab" and weights is None and LAB_WEIGHTS.is_file() and shipped.is_file() and not preset_kwargs:
        cfg = PipelineConfig.load(shipped)  # the resolved config saved with the shipped weights
    else:
        cfg = _preset(preset, preset_kwargs)
    if seeded_init:
        cfg = replace(cfg, weights=None)
    elif weights is not None:
        cfg = replace(cfg, weights=str(weights))  # a copy: the caller's config stays as it was
    elif cfg.preset == "lab" and cfg.weights is None and LAB_WEIGHTS.is_file() and config is None:
        cfg = replace(cfg, weights=str(LAB_WEIGHTS))
    if cfg.weights is None and not seeded_init:
        warnings.warn(f"preset {cfg.preset!r} runs with untrained weights: allocations and answers are not meaningful "
                      "until trained weights are loaded", UntrainedWeightsWarning, stacklevel=2)
    built = build(cfg)
    model = built.model if device is None else built.model.to(device)
    return Pipeline(model, built.config)


def _preset(preset, kwargs: dict) -> PipelineConfig:
    if not isinstance(preset, str):
        raise InputError(f"preset must be a name, got {type(preset).__name__}")
    try:
        return get_preset(preset, **kwargs)
    except TypeError as e:  # an option this preset does not take
        raise InputError(f"preset {preset!r}: {e}; the paper preset takes the checkpoint paths") from None


def _check_files(weights, config) -> None:
    """Weights and config files exist before anything is built (the checks of their contents
    follow at load: CheckpointError for weights, InputError for a config)."""
    if weights is not None:
        if not isinstance(weights, (str, Path)):
            raise InputError(f"weights must be a path or {RANDOM!r}, got {type(weights).__name__}")
        if not Path(weights).is_file():
            raise CheckpointError(f"weights file not found: {weights}")
    if config is not None and not isinstance(config, PipelineConfig):
        if not isinstance(config, (str, Path)):
            raise InputError(f"config must be a path or a PipelineConfig, got {type(config).__name__}")
        if not Path(config).is_file():
            raise InputError(f"config file not found: {config}")


def check_device(device) -> torch.device | None:
    """None, or a torch device this machine has: cpu, cuda / cuda:N (when torch sees that GPU),
    mps (when available). Anything else is an InputError, before any model is built."""
    if device is None:
        return None
    accepted = "cpu, cuda, cuda:N or mps"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(f"unknown device {str(device)[:60]!r}; accepted: {accepted}") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (dev.index or 0) >= count:
            raise InputError(f"device {str(dev)!r} is not available here (torch sees {count} CUDA GPUs); use cpu")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise InputError("device 'mps' is not available here; use cpu")
    elif dev.type != "cpu":
        raise InputError(f"device {str(dev)!r} is not supported; accepted: {accepted}")
    return dev
