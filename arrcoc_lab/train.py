"""One training loop for every phase (phases.py), on CPU, one GPU or many through HF Accelerate.

Determinism by construction: the batch of step t and every random choice in it (allocation
budgets, Gumbel noise) are drawn from generators seeded by (seed, t, sample index), never from a
global stream. So a resumed run continues exactly, and an N-process DDP run sees the same global
batch as a 1-process run (each process takes every N-th sample; per-sample losses are averaged,
so DDP's gradient mean equals the 1-process gradient).

Checkpoints are folders `checkpoints/step_NNNNNN/` (model.safetensors, optimizer.pt, state.json)
written to a temp folder and renamed in one step; `checkpoints/latest` names the newest.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .allocator import solve_knapsack
from .checkpoint import atomic_write_text, load_weights, model_state, save_weights
from .errors import NonFiniteLossError
from .features import SceneTensors, encode_scenes, target_cells
from .llm import IGNORE
from .phases import PhaseConfig, get_phase
from .reader import ReaderConfig, RegionReader, region_tokens

log = logging.getLogger(__name__)
TIER_OF = {"gist": 0, "detail": 2}  # tier label per difficulty: fast / accurate


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
    from .data import SYNTHETIC, load_dataset

    g = model.geometry
    name = cfg.data.split(":", 1)[0]
    per_scene = SYNTHETIC[name].QUESTIONS_PER_SCENE if name in SYNTHETIC else 1
    ds = load_dataset(cfg.data, n=cfg.n_scenes * per_scene, image_size=g.image_size, patch_size=g.patch_size)
    scenes = encode_scenes(model, ds, cfg.cache_dir, progress=cfg.progress, workers=cfg.render_workers)
    f = scenes.fields
    return TrainData(scenes, f["question"], f["answer"], f["target_box"], f["difficulty"], f["scene_index"],
                     scenes.image_hw)


class TrainStep(nn.Module):
    """Computes the phase's loss terms for one batch; wrapping it (not the model's parts) in DDP
    keeps gradient synchronisation correct."""

    def __init__(self, model, phase: PhaseConfig):
        super().__init__()
        self.model, self.phase = model, phase
        # training-only auxiliary (reader.py): lives here, not in the model, and is saved with the checkpoint
        self.reader = RegionReader(model.llm.hidden_size, ReaderConfig()) if "read" in phase.losses else None

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        m, ph, g = self.model, self.phase, self.model.geometry
        feats, pixels = batch["features"], batch["pixels"]
        # the analyzer and query encoder only run when the phase reads them (a third of a phase-0 step)
        needs_rel = "relevance" in ph.losses or ph.allocation in ("gumbel", "model")
        q = m.query_encoder(batch["questions"]) if needs_rel or "tier" in ph.losses else None
        rel = m.relevance(feats, q, pixels) if needs_rel else None
        out: dict[str, torch.Tensor] = {}
        if "relevance" in ph.losses:
            out["relevance"] = relevance_loss(rel.cell_logit, batch["target_cells"])
        if "tier" in ph.losses:
            out["tier"] = F.cross_entropy(m.allocator.tier_classifier(q.pooled, feats), batch["tiers"])
        if ph.allocation == "none":
            return out
        weights = None
        if ph.allocation == "gumbel":
            logits = m.allocator.level_logits(rel.cell_logit)  # (B, Hc, Wc, L)
            weights = gumbel_st(logits, ph.tau, batch["noise_seeds"])
            levels = weights.argmax(-1)
            probs = torch.softmax(logits, -1)
            tokens = torch.tensor(g.levels, dtype=probs.dtype, device=probs.device)
            expected = (probs * tokens).flatten(1).sum(1)  # (B,)
            target = g.uniform_budget if ph.target_budget == "uniform" else g.budget_for_mode(ph.target_budget)
            # per sample above the target (the seeds' penalty); on the batch average below it, so
            # gist questions may spend little while the allocator does not drift far under budget
            out["efficiency"] = ((F.relu(expected / target - 1) ** 2).mean()
                                 + ph.budget_floor * F.relu(1 - expected.mean() / target) ** 2)
            usage = probs.flatten(0, 2).mean(0)  # (L,)
            out["diversity"] = (usage * (usage * len(usage)).clamp(min=1e-9).log()).sum()
            out["_tokens"] = (weights.detach() * tokens).flatten(1).sum(1).mean()
            out["_usage"] = weights.detach().flatten(0, 2).mean(0)
        elif ph.allocation == "uniform":
            levels = torch.full((feats.shape[0], g.cells_per_side, g.cells_per_side), g.uniform_level,
                                dtype=torch.long, device=feats.device)
        else:
            utility = batch["utility"] if ph.allocation == "mixed" else rel.cell.detach()
            levels = torch.from_numpy(np.stack([solve_knapsack(u, g, b) for u, b in
                                                zip(utility.float().cpu().numpy(), batch["budgets"])])).to(feats.device)
        d = m.downstream(feats, levels, level_weights=weights)
        visual, mask = d.visual, d.tokens.mask
        if "answer" in ph.losses:
            per, out["_pred"] = answer_loss(m.llm, visual, mask, batch["questions"], batch["answers"])
            out["answer"] = per.mean()
            if "detail" in batch:  # logged apart: gist questions dominate the mean and hide whether text is read
                for name, sel in (("detail", batch["detail"]), ("gist", ~batch["detail"])):
                    if sel.any():
                        out[f"_answer_{name}"] = per.detach()[sel].mean()
        if self.reader is not None:
            r = self.reader(visual, region_tokens(d.tokens.cells, batch["target_cells"]), batch["answers"])
            out["read"] = r.loss.mean()  # mean over all samples (0 without a region), as DDP averages local means
            out["_read_acc"] = r.byte_accuracy
        if "consistency" in ph.losses:
            out["consistency"] = consistency_loss(visual, mask, m.llm.model.get_input_embeddings().weight)
        out["_levels"] = levels.detach()
        return out


def relevance_loss(cell_logit: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample BCE on cells, averaged over samples; samples without a region label add 0."""
    valid = ~torch.isnan(target)
    bce = F.binary_cross_entropy_with_logits(cell_logit, torch.nan_to_num(target), reduction="none")
    per = (bce * valid).flatten(1).sum(1) / valid.flatten(1).sum(1).clamp(min=1)
    return per.mean()


def answer_loss(llm, visual, mask, questions, answers):
    """Per-sample mean token CE, shape (B,) (the loss is its mean, so DDP's mean of local means is
    the global mean) and the teacher-forced greedy prediction of each answer (for the sample log)."""
    batch = llm.build(visual, mask, questions, answers)
    logits = llm.model(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask).logits
    logits, labels = logits[:, :-1].float(), batch.labels[:, 1:]
    ce = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE, reduction="none")  # (B, S-1)
    valid = labels != IGNORE
    per = (ce * valid).sum(1) / valid.sum(1).clamp(min=1)
    pred_ids = torch.where(valid, logits.argmax(-1), llm.tokenizer.pad_token_id)
    preds = [llm.tokenizer.decode([t for t in row.tolist() if t > 2], skip_special_tokens=True).strip()
             for row in pred_ids]
    return per, preds


def consistency_loss(visual, mask, embeddings) -> torch.Tensor:
    """Projected visual tokens should look like the LLM's own input embeddings (per-dim mean/std)."""
    v = visual[mask].float()  # (N, H)
    e = embeddings.detach().float()
    return F.mse_loss(v.mean(0), e.mean(0)) + F.mse_loss(v.std(0), e.std(0))


def gumbel_st(logits: torch.Tensor, tau: float, seeds: list[int]) -> torch.Tensor:
    """Straight-through Gumbel-softmax with per-sample seeded noise."""
    noise = torch.stack([torch.rand(logits.shape[1:], generator=torch.Generator().manual_seed(int(s)))
                         for s in seeds]).to(logits)
    g = -torch.log(-torch.log(noise.clamp(1e-9, 1 - 1e-9)))
    soft = torch.softmax((logits + g) / tau, -1)
    hard = F.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
    return hard + soft - soft.detach()


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


def set_trainable(model, phase: PhaseConfig) -> list[nn.Parameter]:
    model.requires_grad_(False)
    for name in phase.trainable:
        getattr(model, name).requires_grad_(True)
    model.clip.visual.conv1.requires_grad_(False)  # bypassed patch embedding
    return [p for p in model.parameters() if p.requires_grad]


# ------------------------------------------------------------------------------ checkpoints
def save_checkpoint(out_dir: Path, model, optimizer, scheduler, step: int, history: list, config: dict,
                    aux: nn.Module | None = None) -> Path:
    ckpts = out_dir / "checkpoints"
    final = ckpts / f"step_{step:06d}"
    tmp = ckpts / f".step_{step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_weights(model, tmp / "model.safetensors")
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(), "aux": aux.state_dict() if aux is not None else None},
               tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step, "history": history, "config": config}))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    atomic_write_text(ckpts / "latest", final.name)
    for old in sorted(ckpts.glob("step_*"))[:-2]:  # keep the two newest
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(out_dir: Path, model, optimizer, scheduler, aux: nn.Module | None = None) -> tuple[int, list]:
    latest = out_dir / "checkpoints" / "latest"
    if not latest.is_file():
        return 0, []
    ck = out_dir / "checkpoints" / latest.read_text().strip()
    load_weights(model, ck / "model.safetensors")
    state = torch.load(ck / "optimizer.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if aux is not None and state.get("aux") is not None:
        aux.load_state_dict(state["aux"])
    meta = json.loads((ck / "state.json").read_text())
    log.info("resumed from %s at step %d", ck, meta["step"])
    return meta["step"], meta["history"]


# ------------------------------------------------------------------------------ the loop
@dataclass
class PhaseResult:
    phase: str
    steps: int
    history: list[dict] = field(default_factory=list)  # one row every log_every steps
    weights: str = ""  # final model.safetensors
    samples: str = ""  # allocation decision log (jsonl)


def run_phase(model, data: TrainData, phase: PhaseConfig | str, cfg: TrainConfig, out_dir: str | Path,
              resume: bool = True, pipeline_config: dict | None = None) -> PhaseResult:
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    phase = get_phase(phase) if isinstance(phase, str) else phase
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    acc = Accelerator(cpu=cfg.device == "cpu", mixed_precision=cfg.mixed_precision,
                      kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    torch.manual_seed(cfg.seed)
    if cfg.gradient_checkpointing:
        model.clip.set_grad_checkpointing(True)
        model.llm.model.gradient_checkpointing_enable()
    params = set_trainable(model, phase)
    step_module = TrainStep(model, phase)
    if step_module.reader is not None:
        params += list(step_module.reader.parameters())
    model.train()
    optimizer = torch.optim.AdamW(params, lr=phase.lr, weight_decay=phase.weight_decay)
    lr_at = lambda s: min(1.0, (s + 1) / max(phase.warmup, 1)) * 0.5 * (1 + math.cos(math.pi * min(s / max(phase.steps, 1), 1.0)))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    start, history = load_checkpoint(out_dir, model, optimizer, scheduler, step_module.reader) if resume else (0, [])
    wrapped, optimizer = acc.prepare(step_module, optimizer)
    config = {"phase": asdict(phase), "train": asdict(cfg), "pipeline": pipeline_config}
    if acc.is_main_process:
        atomic_write_text(out_dir / "train_config.json", json.dumps(config, indent=2, default=str))
    samples_path = out_dir / "allocation_samples.jsonl"
    bar = tqdm(range(start, phase.steps), desc=phase.name, disable=not (cfg.progress and acc.is_main_process),
               initial=start, total=phase.steps)
    running: dict[str, list[float]] = {}
    for step in bar:
        batch = make_batch(data, model, phase, step, cfg, acc.process_index, acc.num_processes, acc.device)
        with acc.autocast():
            out = wrapped(batch)
        terms = {k: v for k, v in out.items() if not k.startswith("_")}
        for k, v in terms.items():
            if not torch.isfinite(v):
                raise NonFiniteLossError(f"non-finite {k} loss at step {step} of {phase.name} "
                                         f"(component: {_component(k)}); lower the learning rate or resume from the last checkpoint")
        total = sum(w * terms[k] for k, w in phase.losses.items() if k in terms)  # unweighted terms are only logged
        acc.backward(total)
        if cfg.max_grad_norm:
            acc.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        _accumulate(running, terms, out, model.geometry)
        if (step + 1) % cfg.log_every == 0 or step + 1 == phase.steps:
            row = {"step": step + 1, "lr": scheduler.get_last_lr()[0], **{k: float(np.mean(v)) for k, v in running.items()}}
            history.append(row)
            running = {}
            bar.set_postfix({k: f"{v:.3g}" for k, v in row.items() if k in ("answer", "relevance", "avg_tokens")})
            if phase.allocation in ("gumbel", "model"):  # collapse is a property of learned allocations
                _warn_collapse(row, phase.name, step + 1)
        if acc.is_main_process and "_levels" in out and (step + 1) % cfg.sample_log_every == 0:
            _log_samples(samples_path, step + 1, batch, out, model.geometry)
        if acc.is_main_process and (step + 1) % cfg.ckpt_every == 0 and step + 1 < phase.steps:
            save_checkpoint(out_dir, model, optimizer, scheduler, step + 1, history, config, step_module.reader)
    acc.wait_for_everyone()
    model.eval()
    result = PhaseResult(phase.name, phase.steps, history, str(out_dir / "model.safetensors"), str(samples_path))
    if acc.is_main_process:
        save_weights(model, out_dir / "model.safetensors", config=pipeline_config)
        atomic_write_text(out_dir / "history.json", json.dumps(history, indent=1))
    return result


def _component(term: str) -> str:
    return {"answer": "LLM / downstream", "relevance": "relevance analyzer", "tier": "tier classifier",
            "efficiency": "allocator level head", "diversity": "allocator level head",
            "consistency": "adapter / projector", "read": "region reader / downstream"}.get(term, term)


def _accumulate(running, terms, out, g):
    for k, v in terms.items():
        running.setdefault(k, []).append(float(v.detach()))
    for k in ("_answer_detail", "_answer_gist", "_read_acc"):
        if k in out:
            running.setdefault(k[1:], []).append(float(out[k]))
    if "_levels" in out:
        tokens = torch.tensor(g.levels)[out["_levels"].cpu()]
        running.setdefault("avg_tokens", []).append(float(tokens.flatten(1).sum(1).float().mean()))
        usage = torch.bincount(out["_levels"].cpu().flatten(), minlength=len(g.levels)).float()
        for lv, u in enumerate((usage / usage.sum()).tolist()):
            running.setdefault(f"level{lv}_share", []).append(u)


def _warn_collapse(row: dict, phase: str, step: int) -> None:
    shares = [v for k, v in row.items() if k.startswith("level") and k.endswith("_share")]
    if shares and max(shares) > 0.9:
        log.warning("%s step %d: allocator collapsing — %.0f%% of cells at one level (%s)", phase, step,
                    100 * max(shares), ", ".join(f"{v:.2f}" for v in shares))


def _log_samples(path: Path, step: int, batch: dict, out: dict, g) -> None:
    tokens = torch.tensor(g.levels)[out["_levels"].cpu()]
    preds = out.get("_pred") or [None] * len(batch["questions"])
    with open(path, "a") as f:
        for i in range(min(4, len(batch["questions"]))):
            f.write(json.dumps({"step": step, "question": batch["questions"][i], "answer": batch["answers"][i],
                                "teacher_forced_prediction": preds[i], "tokens_per_cell": tokens[i].tolist()}) + "\n")
