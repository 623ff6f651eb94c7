"""Encoder pre-training: teach the lab SAM to keep detail, then freeze it (before phase 0).

No pretrained SAM can be downloaded here, and a randomly initialised one kept too little of the
sign text for any downstream to read (reports/lab/probe: a first-digit probe read 75 % from the
pixels of a sign window but ~10-28 % from the frozen random SAM's features there). The issue
allows pre-training the lab encoders before they are frozen. The objective is deliberately
generic — no labels, no questions: a light per-patch decoder must rebuild every 8×8 patch's
pixels from the neck output F (B, C, Hp, Wp), with squared errors weighted up on edges so the
thin strokes of glyphs count as much as the sky does. Whatever the decoder can rebuild, F keeps.

The loop follows train.py's rules: batches drawn from generators seeded by (seed, step), every
process taking every N-th sample (DDP through Accelerate), atomic checkpoints with optimizer,
scheduler and RNG state so `resume` continues exactly, non-finite losses stop the run naming the
step. The decoder is training-only (saved in the checkpoint's optimizer.pt, never in the model).
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..checkpoint import atomic_write_text, save_weights
from ..errors import InputError, NonFiniteLossError
from ..data.features import default_workers, scene_loader
from ..inputs import to_model_input

log = logging.getLogger(__name__)


@dataclass
class EncoderPretrainConfig:
    data: str = "scenebench:train"  # dataset spec whose images are used (labels and questions are not)
    n_scenes: int = 3000  # images of the split
    steps: int = 300  # optimisation steps
    batch_size: int = 8  # global batch (split across processes)
    lr: float = 1e-3  # peak learning rate (AdamW, warm-up then cosine decay to 0)
    warmup: int = 20  # warm-up steps
    weight_decay: float = 0.01
    edge_weight: float = 4.0  # extra weight of a pixel's squared error, proportional to its Laplacian magnitude
    decoder_hidden: int = 256  # width of the per-patch decoder (1×1 convs: it sees one feature vector per patch)
    max_grad_norm: float = 1.0
    seed: int = 0
    device: str = "cpu"  # cpu | cuda
    mixed_precision: str = "no"  # no | bf16 (accelerate)
    log_every: int = 10  # history row every N steps
    ckpt_every: int = 100  # checkpoint every N steps
    progress: bool = True

    def __post_init__(self):
        for name in ("n_scenes", "steps", "batch_size", "log_every", "ckpt_every"):
            if getattr(self, name) < 1:
                raise InputError(f"encoder pre-training: {name} must be ≥ 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise InputError(f"encoder pre-training: lr must be > 0, got {self.lr}")
        if self.edge_weight < 0:
            raise InputError(f"encoder pre-training: edge_weight must be ≥ 0, got {self.edge_weight}")


class PixelDecoder(nn.Module):
    """F (B, C, Hp, Wp) → pixels (B, 3, Hp·p, Wp·p), one patch from one feature vector: no spatial
    context, so the encoder itself has to keep each patch's content where the patch is."""

    def __init__(self, channels: int, patch: int, hidden: int):
        super().__init__()
        self.patch = patch
        self.net = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.GELU(), nn.Conv2d(hidden, 3 * patch * patch, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.net(features), self.patch)  # (B, 3·p², Hp, Wp) -> (B, 3, Hp·p, Wp·p)


class ReconstructionStep(nn.Module):
    """Encoder + decoder on normalised pixels; the loss is the edge-weighted squared error."""

    def __init__(self, sam, decoder: PixelDecoder, edge_weight: float):
        super().__init__()
        self.encoder, self.decoder, self.edge_weight = sam.encoder, decoder, edge_weight
        self.register_buffer("mean", sam.pixel_mean.clone(), persistent=False)
        self.register_buffer("std", sam.pixel_std.clone(), persistent=False)
        lap = torch.tensor([[0., 1., 0.], [1., -4., 1.], [0., 1., 0.]])
        self.register_buffer("laplacian", lap.view(1, 1, 3, 3).repeat(3, 1, 1, 1), persistent=False)

    def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (pixels.float() - self.mean) / self.std  # (B, 3, S, S) uint8 → SAM-normalised
        recon = self.decoder(self.encoder(x.to(self.encoder.patch_embed.proj.weight.dtype)).float())
        err = (recon - x).pow(2)
        edges = F.conv2d(x, self.laplacian, padding=1, groups=3).abs().sum(1, keepdim=True)  # (B, 1, S, S)
        # normalised per image, so the loss is a per-sample mean and DDP's mean of process means is the global one
        weight = 1 + self.edge_weight * edges / (edges.mean((1, 2, 3), keepdim=True) + 1e-6)
        return {"loss": (weight * err).mean(), "mse": err.detach().mean()}


@dataclass
class EncoderPretrainResult:
    steps: int
    history: list[dict] = field(default_factory=list)  # one row every log_every steps
    weights: str = ""  # model.safetensors: the whole model, SAM pre-trained (the rest as it came in)
    decoder: PixelDecoder | None = None  # the training-only decoder, for reconstruction figures


def scene_pixels(model, cfg: EncoderPretrainConfig) -> torch.Tensor:
    """(N, 3, S, S) uint8 model-size images of the dataset's first n_scenes scenes (rendered, no SAM pass)."""
    from ..data import SYNTHETIC, load_dataset

    g = model.geometry
    name = cfg.data.split(":", 1)[0]
    per_scene = SYNTHETIC[name].QUESTIONS_PER_SCENE if name in SYNTHETIC else 1
    # synthetic sets need ≥ 32 patches per side; a smaller (test) model gets them resized, as any image is
    render = max(g.image_size, 32 * g.patch_size) if name in SYNTHETIC else g.image_size
    ds = load_dataset(cfg.data, n=cfg.n_scenes * per_scene, image_size=render, patch_size=g.patch_size)
    if hasattr(ds, "scene"):  # synthetic sets: scenes, rendered by worker processes as for the feature cache
        loader = scene_loader(ds, 0, ds.num_scenes, g.image_size, batch_size=16, workers=default_workers())
        return torch.cat([p for p, _, _ in tqdm(loader, desc=f"render {cfg.data}", disable=not cfg.progress)])
    out = torch.empty((len(ds), 3, g.image_size, g.image_size), dtype=torch.uint8)  # real sets: samples
    for i in tqdm(range(len(ds)), desc=f"render {cfg.data}", disable=not cfg.progress):
        out[i] = to_model_input(ds[i].image, g.image_size)[0].round().clamp(0, 255).to(torch.uint8)
    return out


def batch_indices(n: int, cfg: EncoderPretrainConfig, step: int) -> np.ndarray:
    """The global batch of `step`: the same for any number of processes and on resume."""
    return np.random.default_rng([cfg.seed, step]).integers(0, n, cfg.batch_size)


def pretrain_encoder(model, pixels: torch.Tensor, cfg: EncoderPretrainConfig, out_dir: str | Path,
                     resume: bool = True, pipeline_config: dict | None = None) -> EncoderPretrainResult:
    """Train `model.sam`'s encoder (and a throw-away decoder) to rebuild `pixels` (N, 3, S, S)
    uint8 from its features; the encoder is frozen again afterwards. Writes out_dir/model.safetensors
    (the whole model) with config.json, history.json and checkpoints/."""
    from accelerate import Accelerator

    from .checkpoints import load_checkpoint, save_checkpoint

    if pixels.dtype != torch.uint8 or pixels.dim() != 4 or pixels.shape[1] != 3:
        raise InputError(f"pixels must be (N, 3, S, S) uint8, got {tuple(pixels.shape)} {pixels.dtype}")
    if pixels.shape[-1] != model.geometry.image_size:
        raise InputError(f"pixels are {pixels.shape[-1]}² but the model takes {model.geometry.image_size}²")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    acc = Accelerator(cpu=cfg.device == "cpu", mixed_precision=cfg.mixed_precision)
    torch.manual_seed(cfg.seed)
    model.requires_grad_(False)
    sam = model.sam
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        decoder = PixelDecoder(sam.out_chans, model.geometry.patch_size, cfg.decoder_hidden)
    step_module = ReconstructionStep(sam, decoder, cfg.edge_weight).to(next(sam.parameters()).device)
    sam.encoder.requires_grad_(True)
    params = list(sam.encoder.parameters()) + list(decoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    lr_at = lambda s: min(1.0, (s + 1) / max(cfg.warmup, 1)) * 0.5 * (1 + math.cos(math.pi * min(s / cfg.steps, 1.0)))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    config = {"encoder_pretrain": asdict(cfg), "pipeline": pipeline_config}
    # a resumed run with settings it cannot honour is refused, listing the keys (checkpoints.py)
    start, history = load_checkpoint(out_dir, model, optimizer, scheduler, decoder, config=config) if resume else (0, [])
    wrapped, optimizer = acc.prepare(step_module, optimizer)
    if acc.is_main_process:
        atomic_write_text(out_dir / "train_config.json", json.dumps(config, indent=2, default=str))
    bar = tqdm(range(start, cfg.steps), desc="encoder pre-training", initial=start, total=cfg.steps,
               disable=not (cfg.progress and acc.is_main_process))
    running: dict[str, list[float]] = {}
    try:
        nn.Module.train(sam.encoder, True)  # SamEncoder.train() pins eval mode; the encoder trains here
        for step in bar:
            idx = batch_indices(len(pixels), cfg, step)[acc.process_index::acc.num_processes]
            with acc.autocast():
                out = wrapped(pixels[torch.from_numpy(idx)].to(acc.device))
            if not torch.isfinite(out["loss"]):
                raise NonFiniteLossError(f"non-finite reconstruction loss at step {step} of encoder pre-training "
                                         f"(component: SAM encoder / pixel decoder); lower lr or resume from the last checkpoint")
            acc.backward(out["loss"])
            if cfg.max_grad_norm:
                acc.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            for k, v in out.items():
                running.setdefault(k, []).append(float(v.detach()))
            if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
                history.append({"step": step + 1, "lr": scheduler.get_last_lr()[0],
                                **{k: float(np.mean(v)) for k, v in running.items()}})
                running = {}
                bar.set_postfix(loss=f"{history[-1]['loss']:.3g}", mse=f"{history[-1]['mse']:.3g}")
            if acc.is_main_process and (step + 1) % cfg.ckpt_every == 0 and step + 1 < cfg.steps:
                save_checkpoint(out_dir, model, optimizer, scheduler, step + 1, history, config, decoder)
    finally:
        sam.requires_grad_(False)  # frozen again, whatever happened
        sam.eval()
    acc.wait_for_everyone()
    result = EncoderPretrainResult(cfg.steps, history, str(out_dir / "model.safetensors"), decoder.eval())
    if acc.is_main_process:
        save_weights(model, out_dir / "model.safetensors", config=pipeline_config)
        atomic_write_text(out_dir / "history.json", json.dumps(history, indent=1))
    return result


@torch.no_grad()
def reconstruct(model, decoder: PixelDecoder, pixels: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) uint8 → the decoder's rebuild of them from SAM features, as uint8 (for figures)."""
    sam = model.sam
    recon = decoder(sam(pixels.float()))
    return (recon * sam.pixel_std + sam.pixel_mean).round().clamp(0, 255).to(torch.uint8)
