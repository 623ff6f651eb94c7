"""One training loop for every phase (phases.py), on CPU, one GPU or many through HF Accelerate.
A resumed run continues exactly (sampling.py draws every batch from seeded generators; the
checkpoint holds the optimizer, the scheduler and the RNG state). Every history row also goes to
Accelerate's experiment trackers (tracking.py: TensorBoard under <out_dir>/tensorboard/ by default)."""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..checkpoint import atomic_write_text, save_weights
from ..errors import NonFiniteLossError
from .checkpoints import load_checkpoint, save_checkpoint
from .config import TrainConfig
from .phases import PhaseConfig, get_phase
from .sampling import TrainData, make_batch, split_by_tokens
from .step import TrainStep, param_groups, set_trainable
from .tracking import RunTracker, accelerator_kwargs, trackers

log = logging.getLogger(__name__)


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
    names = trackers(cfg.log_with)
    acc = Accelerator(cpu=cfg.device == "cpu", mixed_precision=cfg.mixed_precision,
                      kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
                      **accelerator_kwargs(names, out_dir))
    log.info("%s on %d process(es) (%s)", phase.name, acc.num_processes, acc.distributed_type)
    torch.manual_seed(cfg.seed)
    if cfg.gradient_checkpointing:
        model.clip.set_grad_checkpointing(True)
        model.llm.model.gradient_checkpointing_enable()
    params = set_trainable(model, phase)
    step_module = TrainStep(model, phase)
    if step_module.reader is not None:
        params += list(step_module.reader.parameters())
    model.train()
    optimizer = torch.optim.AdamW(param_groups(model, params, phase), lr=phase.lr, weight_decay=phase.weight_decay)
    lr_at = lambda s: min(1.0, (s + 1) / max(phase.warmup, 1)) * 0.5 * (1 + math.cos(math.pi * min(s / max(phase.steps, 1), 1.0)))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    config = run_config(phase, cfg, pipeline_config)
    # resume: the newest intact checkpoint, refused (CheckpointError) if written under other settings
    start, history = (load_checkpoint(out_dir, model, optimizer, scheduler, step_module.reader, config=config)
                      if resume else (0, []))
    wrapped, optimizer = acc.prepare(step_module, optimizer)
    if acc.is_main_process:  # written once the settings are known to be the ones the run follows
        atomic_write_text(out_dir / "train_config.json", json.dumps(config, indent=2, default=str))
    samples_path = out_dir / "allocation_samples.jsonl"
    bar = tqdm(range(start, phase.steps), desc=phase.name, disable=not (cfg.progress and acc.is_main_process),
               initial=start, total=phase.steps)
    running: dict[str, list[float]] = {}
    tick = time.perf_counter()  # wall_s in the history: training seconds so far, summed over resumed sittings
    with RunTracker(acc, names, phase.name, config, history) as tracker:  # replays a resumed run's history
        for step in bar:
            drawn = phase.at(step)  # the phase's segments, applied once for this step
            batch = make_batch(data, model, drawn, step, cfg, acc.process_index, acc.num_processes, acc.device)
            chunks = split_by_tokens(batch, drawn.micro_batches, model.geometry)
            shares = [len(c["questions"]) / len(batch["questions"]) for c in chunks]
            out, terms = _merge([(w, _backward(acc, wrapped, c, phase, step, w)) for c, w in zip(chunks, shares)])
            if len(chunks) > 1:  # the samples in the order of `out` (sorted by tokens), for the sample log
                batch = {k: [x for c in chunks for x in c[k]] for k in ("questions", "answers")}
            if cfg.max_grad_norm:
                acc.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            _accumulate(running, terms, out, model.geometry)
            if (step + 1) % cfg.log_every == 0 or step + 1 == phase.steps:
                wall = (history[-1].get("wall_s", 0.0) if history else 0.0) + time.perf_counter() - tick  # across resumes
                tick = time.perf_counter()
                row = {"step": step + 1, "lr": scheduler.get_last_lr()[0], "wall_s": wall,
                       **{k: float(np.mean(v)) for k, v in running.items()}}
                history.append(row)
                tracker.log(row)
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


def run_config(phase: PhaseConfig, cfg: TrainConfig, pipeline_config: dict | None = None) -> dict:
    """A run's settings as train_config.json and its checkpoints record them (what resuming compares;
    `checkpoints.check_resume(out_dir, run_config(...))` checks them before any data is loaded)."""
    return {"phase": asdict(phase), "train": asdict(cfg), "pipeline": pipeline_config}


def _backward(acc, wrapped, batch: dict, phase: PhaseConfig, step: int, share: float = 1.0) -> dict:
    """Forward and backward of one (micro-)batch; its loss is the batch mean, so chunks weighted
    by their share add up to the whole batch's gradient (the loop scales them)."""
    with acc.autocast():
        out = wrapped(batch)
    terms = {k: v for k, v in out.items() if not k.startswith("_")}
    for k, v in terms.items():
        if not torch.isfinite(v):
            raise NonFiniteLossError(f"non-finite {k} loss at step {step} of {phase.name} "
                                     f"(component: {_component(k)}); lower the learning rate or resume from the last checkpoint")
    total = sum(w * terms[k] for k, w in phase.losses.items() if k in terms)  # unweighted terms are only logged
    acc.backward(total * share)
    return out


def _merge(outs: list[tuple[float, dict]]) -> tuple[dict, dict]:
    """One step's outputs from its chunks: loss terms and logged means weighted by chunk share, a
    group's answer mean (`_answer_<difficulty or family>`) by the group's samples in each chunk
    (`_count_…`; by share the full-view chunk's few would weigh as much as a whole chunk), levels
    and predictions concatenated in chunk order."""
    if len(outs) == 1:
        out = outs[0][1]
        return out, {k: v for k, v in out.items() if not k.startswith("_")}
    merged: dict = {}
    for k in dict.fromkeys(k for _, o in outs for k in o):  # every chunk's keys (a gist-only chunk has no _answer_detail)
        count = f"_count_{k[len('_answer_'):]}" if k.startswith("_answer_") else None  # a group's mean: by its samples
        vals = [(o.get(count, w), o[k]) for w, o in outs if k in o]
        if k == "_levels":
            merged[k] = torch.cat([v for _, v in vals])
        elif k == "_pred":
            merged[k] = [p for _, v in vals for p in v]
        elif k.startswith("_count_"):
            merged[k] = sum(v for _, v in vals)
        elif torch.is_tensor(vals[0][1]) and vals[0][1].dim() == 0:
            merged[k] = sum(w * v.detach() for w, v in vals) / sum(w for w, _ in vals)
        else:
            merged[k] = vals[-1][1]
    return merged, {k: v for k, v in merged.items() if not k.startswith("_")}


def _component(term: str) -> str:
    return {"answer": "LLM / downstream", "relevance": "relevance analyzer", "tier": "tier classifier",
            "efficiency": "allocator level head", "diversity": "allocator level head",
            "consistency": "adapter / projector", "read": "region reader / downstream"}.get(term, term)


def _accumulate(running, terms, out, g):
    for k, v in terms.items():
        running.setdefault(k, []).append(float(v.detach()))
    for k in [k for k in out if k.startswith("_answer_")] + ["_read_acc"]:  # per difficulty and per family
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
