"""The run's settings (what every phase of a run shares; the phase itself is a PhaseConfig)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainConfig:
    data: str = "scenebench:train"  # dataset spec (see arrcoc_lab.data.load_dataset)
    n_scenes: int = 1000  # scenes of the split used (each has several questions)
    batch_size: int = 32  # global batch (split across processes)
    seed: int = 0
    device: str = "cpu"  # cpu | cuda | auto
    mixed_precision: str = "no"  # no | bf16 | fp16 (accelerate)
    gradient_checkpointing: bool = False  # CLIP + LLM activation checkpointing
    max_grad_norm: float = 1.0
    log_every: int = 25  # history row (losses, level usage, average tokens) every N steps
    ckpt_every: int = 100  # checkpoint every N steps
    sample_log_every: int = 50  # allocation decisions logged every N steps
    cache_dir: str = "cache"  # frozen-feature cache (git-ignored)
    render_workers: int | None = None  # processes rendering scenes when the cache is built (None: cores - 1, ≤ 8)
    progress: bool = True
    log_with: str = "auto"  # experiment trackers (tracking.py): auto (TensorBoard if installed) | none | tensorboard,wandb,…
