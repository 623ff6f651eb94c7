"""The public contract (README, "Python API"):

    pipe = load_pipeline("lab")
    out = pipe(image, "What's the formula on the billboard?", budget=64, policy="arrcoc")
    out.answer, out.num_tokens, out.tokens_per_cell, out.cell_boxes, out.relevance, out.timings

The SAM features of the last few images are cached by content hash, so asking a second question
about the same image (widgets, demo, compare mode) re-runs only what depends on the question.
`pipe.batch(images, queries, budget=…)` answers many pairs in one forward, equal to one-by-one calls.

A pipeline saves as a Hugging Face model folder and loads back from it, offline:

    pipe.save_pretrained("runs/lab/hf", evaluation="runs/eval/.../metrics.json")
    pipe = load_pipeline("runs/lab/hf")   # config.json + model.safetensors, checked; README.md: the card
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from . import modelcard
from .checkpoint import (CARD_FILE, CONFIG_FILE, WEIGHTS_FILE, atomic_write_text, check_folder, hf_config,
                         read_config_json, same_weights, save_weights, stored_tensors)
from .modeling.allocator import Policy, stable_seed
from .modeling.build import build
from .modeling.geometry import Geometry
from .errors import CheckpointError, InputError
from .inputs import MAX_PIXELS, check_max_new_tokens, check_query, load_image, parse_budget, to_model_input
from .modeling.model import ARRCOC
from .modeling.presets import PRESETS, PipelineConfig, get_preset
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
        if key in self._cache and self._cache[key].device == pixels.device:  # (not after a move to another device)
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
        return self.batch([image], [query], budget=budget, policy=policy, max_new_tokens=max_new_tokens)[0]

    @torch.no_grad()
    def batch(self, images: list, queries: list[str], budget=None, policy: str = "arrcoc",
              max_new_tokens: int | None = None) -> list[PipelineOutput]:
        """Several (image, question) pairs at once, with the results of one-by-one calls: SAM runs
        once per distinct image (the content-hash cache), then the stages after it run as one
        forward over the padded, masked token sets, with batched greedy generation (left padding,
        positions from the attention mask). `budget`: one value for all or one per pair; one policy
        per call. Each output's trace is its own sample's; its timings are the forward's divided
        among the pairs, and an image's SAM time goes to the first pair that asks about it (0.0 for
        later pairs and cached images, as one-by-one calls would show)."""
        images, queries = _pairs(images, queries)
        budgets = list(budget) if isinstance(budget, (list, tuple)) else [budget] * len(queries)
        if len(budgets) != len(queries):
            raise InputError(f"budget: give one value, or one per question ({len(queries)}), got {len(budgets)}")
        resolved = [self.resolve(policy, b) for b in budgets]  # bad input fails here, before SAM runs
        p, budgets = resolved[0][0], [b for _, b in resolved]
        max_new_tokens = check_max_new_tokens(max_new_tokens)
        decoded, prep = {}, []
        for image in images:  # each image object decoded once, each distinct content encoded once
            ref = image if isinstance(image, (str, Path)) else id(image)
            prep.append(decoded[ref][:4] + (0.0,) if ref in decoded else decoded.setdefault(ref, self.prepare(image)))
        out = self.model(torch.cat([x[1] for x in prep]), queries, policy=p, budget=budgets,
                         features=torch.cat([x[2] for x in prep]), max_new_tokens=max_new_tokens,
                         seeds=[stable_seed(x[3], q) for x, q in zip(prep, queries)])
        n, outputs = len(queries), []
        for j, (x, q) in enumerate(zip(prep, queries)):
            tr = out.trace if n == 1 else out.trace.item(j, n)
            tr.timings = {**{s: v / n for s, v in out.trace.timings.items()}, "sam": x[4]}
            outputs.append(self._output(tr, out.answers[j], x[0], q, p.name))
        return outputs

    def compare(self, image, queries: list[str], **kwargs) -> list[PipelineOutput]:
        """The same image under several questions: encoded once, answered in one batch (`batch`)."""
        if isinstance(queries, (str, bytes)) or not isinstance(queries, (list, tuple)) or not queries:
            raise InputError(f"queries must be a non-empty list of strings, got {type(queries).__name__}")
        return self.batch([image] * len(queries), list(queries), **kwargs)

    def save_pretrained(self, save_directory: str | Path, evaluation=None, training: str | dict | None = None,
                        dtype: torch.dtype | None = None) -> Path:
        """Write this pipeline as a Hugging Face model folder, each file atomically: config.json
        (the resolved PipelineConfig + model_type, architectures), model.safetensors (our tensors,
        their sha256 in the metadata) and README.md (the model card). Loads back with
        load_pipeline(folder), and with transformers' AutoModel.from_pretrained(folder) once
        arrcoc_lab.hf is imported; `huggingface_hub.upload_folder` or ArrcocModel.push_to_hub upload it.

        evaluation: an `arrcoc-lab eval` report (its metrics.json, that folder, or the dict) for the
        card's table; without it, the one saved with these weights or found beside them.
        training: a note (or dict) on weights trained in memory; without it the card reads the run
        folder beside the weights (train_config.json, history.json), or names their source.
        dtype: store floating-point tensors in it (torch.float16 halves the file)."""
        folder = Path(save_directory)
        if folder.exists() and not folder.is_dir():
            raise InputError(f"save_pretrained needs a folder, but {folder} is a file")
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise InputError(f"dtype must be a floating-point torch dtype such as torch.float16, got {dtype!r}")
        if training is not None and not isinstance(training, (str, dict)):
            raise InputError(f"training must be a note (str) or a dict, got {type(training).__name__}")
        try:
            json.dumps(training)
        except (TypeError, ValueError) as e:
            raise InputError(f"training must be JSON-serialisable (it is stored with the weights): {e}") from None
        src = self.config.weights
        unchanged = src is not None and same_weights(self.model, src)
        info = modelcard.training_info(src, unchanged, self.config.seed)
        if training is not None:  # the caller's account replaces what the files could tell
            source = (f"in memory, from the random initialisation (seed {self.config.seed})" if info.get("untrained")
                      else info["source"])
            info = {"source": source, **({"note": training} if isinstance(training, str) else training)}
        if evaluation is not None:
            table = modelcard.evaluation_summary(evaluation)
        else:  # what was saved with these very weights, or an evaluation of them beside them
            table = (modelcard.carried_evaluation(src) or modelcard.find_evaluation(src)) if unchanged else None
        # SAM and CLIP weights are in model.safetensors: the folder does not need their original files
        cfg = replace(self.config, weights=None, sam=replace(self.config.sam, checkpoint=None),
                      clip=replace(self.config.clip, pretrained=None))
        weights = folder / WEIGHTS_FILE
        save_weights(self.model, weights, config=hf_config(cfg.to_dict()), dtype=dtype,
                     metadata=modelcard.metadata(info, table))
        atomic_write_text(folder / CARD_FILE, modelcard.render(self._card_facts(dtype, weights), info, table))
        log.info("saved the %s pipeline to %s", self.config.preset, folder)
        return folder

    def _card_facts(self, dtype: torch.dtype | None, weights: Path) -> dict:
        from . import __version__

        g, c = self.geometry, self.config
        tensors = stored_tensors(self.model)
        floats = {str(dtype or v.dtype).replace("torch.", "") for v in tensors.values() if v.is_floating_point()}
        s, q, clip, llm = c.sam, c.query, c.clip, c.llm
        components = [
            ("SAM encoder", (f"SAM `{s.variant}`" if s.variant != "custom" else
                             f"SAM ImageEncoderViT, {s.embed_dim} wide, {s.depth} deep")
             + (" (official checkpoint)" if s.checkpoint else "") + ", frozen"),
            ("query encoder", "all-MiniLM-L6-v2, frozen" if q.kind == "minilm" and q.pretrained else
             "tiny random BERT (tests)" if q.kind == "minilm" else f"open_clip text tower `{q.openclip_model}`"),
            ("CLIP on tokens", f"open_clip `{clip.model}`" if clip.model else
             f"open_clip VisionTransformer, {clip.width} wide, {clip.layers} deep"),
            ("LLM", f"Hugging Face causal LM from `llm.path` ({Path(llm.path).name})" if llm.path else
             f"Qwen3, {llm.hidden_size} wide, {llm.layers} layers, byte tokenizer"),
        ]
        return {"preset": c.preset, "image_size": g.image_size, "patch_size": g.patch_size,
                "patches": g.patches_per_side, "cells": g.cells_per_side, "min_tokens": g.min_tokens,
                "uniform_tokens": g.uniform_budget, "full_tokens": g.full_tokens,
                "quality": dict(sorted(g.quality_budgets.items(), key=lambda kv: kv[1])),
                "components": components, "n_tensors": len(tensors), "dtype": "/".join(sorted(floats)),
                "size_mb": weights.stat().st_size / 1e6, "version": __version__, "vlm": modelcard.vlm_facts(c)}

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


def _pairs(images, queries) -> tuple[list, list[str]]:
    """`batch`'s inputs: two lists of equal length, every question checked before the first one runs."""
    for what, v in (("images", images), ("queries", queries)):
        if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple)) or not v:
            raise InputError(f"{what} must be a non-empty list, got {type(v).__name__}")
    if len(images) != len(queries):
        raise InputError(f"images and queries must pair up: {len(images)} images, {len(queries)} queries")
    return list(images), [check_query(q) for q in queries]


def load_pipeline(preset: str | Path = "lab", weights: str | Path | None = None, device: str | torch.device | None = None,
                  config: str | Path | PipelineConfig | None = None, **preset_kwargs) -> Pipeline:
    """Build a pipeline. `preset` names a registry entry (lab, paper, tiny, hf-vlm), or is a folder written
    by `Pipeline.save_pretrained` (a Path, or a path string that is not a preset name, e.g.
    "runs/lab/hf" or "./lab"): its config.json and model.safetensors load offline, checked like any
    weights (the shipped arrcoc_lab/weights/lab/ is such a folder). `config` (a JSON file or
    PipelineConfig) replaces the preset's or the folder's config; `weights` is our safetensors
    file, or "random" for the seeded initialisation (where training starts; no warning, since it
    was asked for). `lab` loads the shipped weights when they exist and warns when it has to run untrained.
    `preset_kwargs` go to the preset: load_pipeline("hf-vlm", vlm_path=DIR) wraps a local LLaVA or
    Qwen2-VL folder (docs/HF_VLM.md); it runs training-free without weights of ours, so it does not warn."""
    device = check_device(device)
    folder = preset_folder(preset)
    if folder is not None:
        return _load_folder(folder, weights, device, config, preset_kwargs)
    seeded_init = isinstance(weights, str) and weights == RANDOM
    _check_files(weights if not seeded_init else None, config)
    shipped = LAB_WEIGHTS.with_name("config.json")
    if isinstance(config, PipelineConfig):
        cfg = config
    elif config is not None:
        cfg = read_config(config)
    elif preset == "lab" and weights is None and LAB_WEIGHTS.is_file() and shipped.is_file() and not preset_kwargs:
        cfg = read_config(shipped, CheckpointError)  # the resolved config saved with the shipped weights
    else:
        cfg = _preset(preset, preset_kwargs)
    if seeded_init:
        cfg = replace(cfg, weights=None)
    elif weights is not None:
        cfg = replace(cfg, weights=str(weights))  # a copy: the caller's config stays as it was
    elif cfg.preset == "lab" and cfg.weights is None and LAB_WEIGHTS.is_file() and config is None:
        cfg = replace(cfg, weights=str(LAB_WEIGHTS))
    if cfg.weights is None and not seeded_init and cfg.vlm is None:  # hf-vlm: a real VLM, zero-shot relevance
        warnings.warn(f"preset {cfg.preset!r} runs with untrained weights: allocations and answers are not meaningful "
                      "until trained weights are loaded", UntrainedWeightsWarning, stacklevel=2)
    return _build(cfg, device)


def _build(cfg: PipelineConfig, device: torch.device | None) -> Pipeline:
    built = build(cfg)
    model = built.model if device is None else built.model.to(device)
    return Pipeline(model, built.config)


def preset_folder(preset) -> Path | None:
    """The saved folder `preset` names, or None for a preset name. Registry names win over a
    folder of the same name in the working directory (write "./lab" or Path("lab") for that)."""
    if isinstance(preset, Path):
        return preset
    if isinstance(preset, str) and preset not in PRESETS and (
            Path(preset).is_dir() or "/" in preset or os.sep in preset or preset.startswith((".", "~"))):
        return Path(preset).expanduser()
    return None


def _load_folder(folder: Path, weights, device, config, preset_kwargs: dict) -> Pipeline:
    """A folder written by save_pretrained: its config.json (or `config`) and its model.safetensors
    (or `weights`: another file of ours, or "random")."""
    if preset_kwargs:
        raise InputError(f"preset options {sorted(preset_kwargs)} apply to preset names; the folder {folder} "
                         f"brings its own {CONFIG_FILE} (edit it, or pass config=)")
    seeded_init = isinstance(weights, str) and weights == RANDOM
    check_folder(folder, weights=weights is None)
    _check_files(None if seeded_init else weights, config)
    if isinstance(config, PipelineConfig):
        cfg = config
    else:
        cfg = read_config(config) if config is not None else read_config(folder / CONFIG_FILE, CheckpointError)
    chosen = None if seeded_init else str(weights if weights is not None else folder / WEIGHTS_FILE)
    return _build(replace(cfg, weights=chosen), device)


def read_config(path: str | Path, error: type[ValueError] = InputError) -> PipelineConfig:
    """A config.json (ours, or a saved folder's with transformers' keys) as a PipelineConfig;
    `error` is raised on any problem (CheckpointError for a folder's own config)."""
    d = read_config_json(path, error)
    try:
        return PipelineConfig.from_dict(d)
    except (InputError, TypeError, ValueError) as e:
        raise error(f"config file {path} does not describe a pipeline of this version: {e}") from None


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
        if Path(weights).is_dir():
            raise InputError(f"weights must be a .safetensors file; {weights} is a folder: load a folder written by "
                             "save_pretrained with load_pipeline(folder)")
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
