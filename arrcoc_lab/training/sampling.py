"""The training data and the batch of each step.

Determinism by construction: the batch of step t and every random choice in it (allocation
budgets, utilities, Gumbel noise seeds) are drawn from generators seeded by (seed, t, sample
index), never from a global stream. So a resumed run continues exactly, and an N-process DDP run
sees the same global batch as a 1-process run (each process takes every N-th sample)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.features import SceneTensors, encode_scenes, target_cells
from .config import TrainConfig
from .phases import PhaseConfig

TIER_OF = {"gist": 0, "detail": 2}  # tier label per difficulty: fast / accurate


@dataclass
class TrainData:
    scenes: SceneTensors
    questions: list[str]
    answers: list[str]
    boxes: list  # target box per sample (None = global)
    difficulty: list[str]
    scene_index: list[int]
    image_hw: tuple[int, int]

    def __len__(self):
        return len(self.questions)


def load_train_data(model, cfg: TrainConfig) -> TrainData:
    from ..data import SYNTHETIC, load_dataset

    g = model.geometry
    name = cfg.data.split(":", 1)[0]
    per_scene = SYNTHETIC[name].QUESTIONS_PER_SCENE if name in SYNTHETIC else 1
    ds = load_dataset(cfg.data, n=cfg.n_scenes * per_scene, image_size=g.image_size, patch_size=g.patch_size)
    scenes = encode_scenes(model, ds, cfg.cache_dir, progress=cfg.progress, workers=cfg.render_workers)
    f = scenes.fields
    return TrainData(scenes, f["question"], f["answer"], f["target_box"], f["difficulty"], f["scene_index"],
                     scenes.image_hw)


def sample_indices(data: TrainData, phase: PhaseConfig, step: int, cfg: TrainConfig) -> np.ndarray:
    """The global batch of `step`, drawn without replacement; `phase.detail_share` reweights the
    draw so that share of the batch (in expectation) is fine-detail questions."""
    rng = np.random.default_rng([cfg.seed, step])
    if phase.detail_share is None:
        return rng.choice(len(data), size=cfg.batch_size, replace=False)
    detail = np.array([d == "detail" for d in data.difficulty])
    n_detail = int(detail.sum())
    if n_detail in (0, len(data)):
        return rng.choice(len(data), size=cfg.batch_size, replace=False)
    p = np.where(detail, phase.detail_share / n_detail, (1 - phase.detail_share) / (len(data) - n_detail))
    k = min(cfg.batch_size, int((p > 0).sum()))
    return rng.choice(len(data), size=k, replace=False, p=p / p.sum())


def make_batch(data: TrainData, model, phase: PhaseConfig, step: int, cfg: TrainConfig, rank: int, world: int,
               device) -> dict:
    """The global batch of `step` (same for any number of processes); this process's share."""
    g = model.geometry
    idx = sample_indices(data, phase, step, cfg)
    mine = idx[rank::world]
    rows = data.scenes.rows([data.scene_index[i] for i in mine])
    boxes = [data.boxes[i] for i in mine]
    batch = {
        "features": data.scenes.features[rows].float().to(device),
        "pixels": data.scenes.pixels[rows].float().to(device),
        "questions": [data.questions[i] for i in mine],
        "answers": [data.answers[i] for i in mine],
        "detail": torch.tensor([data.difficulty[i] == "detail" for i in mine], device=device),
        "tiers": torch.tensor([TIER_OF[data.difficulty[i]] for i in mine], device=device),
        "target_cells": target_cells(boxes, g, data.image_hw).to(device),
        "noise_seeds": [int(s) for s in np.random.default_rng([cfg.seed, step, 1]).integers(0, 2**31, cfg.batch_size)[rank::world]],
    }
    if phase.allocation in ("mixed", "model"):
        batch["budgets"], batch["utility"] = mixed_allocation(
            batch["target_cells"], g, cfg.seed, step, rank, world, cfg.batch_size,
            detail=batch["detail"].tolist(), high_res_steps=phase.high_res_steps)
    return batch


def mixed_allocation(targets: torch.Tensor, g, seed: int, step: int, rank: int, world: int, global_batch: int,
                     detail: list[bool] | None = None, high_res_steps: float = 0.0):
    """Random budgets and utilities so the downstream learns to read any allocation.

    Gist samples: 45 % aimed at the target (oracle), 20 % random, 20 % uniform, 15 % random
    utilities over the target's neighbourhood, at budgets from gist-only to the accurate mode.
    Fine-detail samples are what the downstream must learn to *read*, so 70 % of them get the
    oracle at the budgets where a target cell reaches a readable level (uniform and accurate),
    and on `high_res_steps` of the steps their target at full resolution (the `full` policy's
    view); 3 % of steps are full everywhere."""
    choices = [g.min_tokens, g.budget_for_mode("balanced"), g.uniform_budget, g.budget_for_mode("accurate")]
    detail = detail or [False] * len(targets)
    budgets, utils = [], []
    # full resolution is drawn per step, not per sample: one full sample would pad the whole batch
    # to max_tokens and cost ~10x the step time; likewise target-at-full steps
    full_step = np.random.default_rng([seed, step, 3]).random() < 0.03
    high_step = np.random.default_rng([seed, step, 4]).random() < high_res_steps
    for k, b in enumerate(range(rank, global_batch, world)):
        r = np.random.default_rng([seed, step, 2, b])
        t = np.nan_to_num(targets[k].cpu().numpy(), nan=0.0)
        kind = r.random()
        if detail[k] and t.any():
            kind = 0.0 if kind < 0.7 else 0.45 + 0.55 * (kind - 0.7) / 0.3  # oracle, else the other kinds
            budget = target_full_budget(t, g) if high_step else int(r.choice(choices[2:]))
        else:
            budget = int(r.choice(choices))
        if full_step:
            budget = g.max_tokens
        if kind < 0.45 and t.any():
            u = t + 0.05 * r.random(t.shape)
        elif kind < 0.65:
            u = r.random(t.shape)
        elif kind < 0.85:
            u = np.ones(t.shape)
        else:
            u = 0.5 * t + r.random(t.shape)
        budgets.append(budget)
        utils.append(u)
    return budgets, torch.from_numpy(np.stack(utils))


def target_full_budget(target: np.ndarray, g) -> int:
    """Tokens of the cheapest smooth allocation with every target cell at the top level: neighbours
    step down one level per cell of distance, the rest sit at the minimum."""
    hc, wc = target.shape
    ys, xs = np.nonzero(target > 0)
    gy, gx = np.mgrid[0:hc, 0:wc]
    dist = np.min(np.abs(gy[..., None] - ys) + np.abs(gx[..., None] - xs), axis=-1)  # (Hc, Wc)
    level = np.maximum(g.min_level, g.max_level_index - g.max_level_step * dist)
    return int(np.asarray(g.levels)[level].sum())
