"""Exact-resume checkpoints: folders `checkpoints/step_NNNNNN/` (model.safetensors, optimizer.pt,
state.json) written to a temp folder and renamed in one step; `checkpoints/latest` names the newest.

Resuming reads the newest checkpoint that is intact — every file readable, the weights finite and
matching their checksum, the step where the folder name says — and falls back to the one before it
with a warning when the newest is damaged. A run resumed with settings that change its trajectory
(learning rate, batch, steps, data, model, …) is refused with the differing keys listed: the
optimizer, the scheduler and the batch order restored from the checkpoint belong to the old ones.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import apply_weights, atomic_write_text, read_weights, save_weights
from ..errors import CheckpointError
from .phases import PhaseConfig

log = logging.getLogger(__name__)
# Settings a resumed run can change and honour (they do not alter what the next step computes from
# the restored state, or they are applied from here on and recorded as such in train_config.json).
RESUMABLE = frozenset({"train.progress", "train.log_every", "train.ckpt_every", "train.sample_log_every",
                       "train.render_workers", "train.cache_dir", "train.device", "train.mixed_precision",
                       "train.gradient_checkpointing", "train.log_with", "encoder_pretrain.progress",
                       "encoder_pretrain.log_every", "encoder_pretrain.ckpt_every", "encoder_pretrain.device",
                       "encoder_pretrain.mixed_precision"})


class CheckpointFallbackWarning(UserWarning):
    """The newest checkpoint was damaged; the run resumed from an older intact one."""


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


def load_checkpoint(out_dir: Path, model, optimizer, scheduler, aux: nn.Module | None = None,
                    config: dict | None = None) -> tuple[int, list]:
    """Restore the newest intact checkpoint under `out_dir` (see the module docstring); returns
    (step, history), or (0, []) when there is none. `config`: the resumed run's settings, refused
    when they differ from the checkpoint's in a key outside RESUMABLE. Nothing is changed until a
    checkpoint has been read and checked in full."""
    problems = []
    for ck in _candidates(Path(out_dir) / "checkpoints"):
        try:
            meta, weights, state = _read(ck, model)
        except CheckpointError as e:
            problems.append(f"{ck.name}: {e}")
            continue
        if config is not None:
            _check_config(meta.get("config"), config, ck, meta["step"])
        if problems:
            message = f"resuming from {ck} (step {meta['step']}): newer checkpoints are damaged: {'; '.join(problems)}"
            log.warning(message)
            warnings.warn(message, CheckpointFallbackWarning, stacklevel=2)
        _apply(ck, weights, state, model, optimizer, scheduler, aux)
        log.info("resumed from %s at step %d", ck, meta["step"])
        return meta["step"], meta["history"]
    if problems:
        raise CheckpointError(f"no intact checkpoint in {Path(out_dir) / 'checkpoints'}: {'; '.join(problems)}; "
                              "start afresh (--no-resume, or resume=False) or in a new folder")
    return 0, []


def check_resume(out_dir: Path, config: dict) -> None:
    """Before any data is loaded: refuse `config` if the checkpoint a resume would start from was
    written with settings it cannot honour (reads only state.json files)."""
    for ck in _candidates(Path(out_dir) / "checkpoints"):
        try:
            meta = _read_state(ck)
        except CheckpointError:
            continue
        _check_config(meta.get("config"), config, ck, meta["step"])
        return


def config_differences(old, new, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two run configs (JSON-normalised), RESUMABLE ones left out."""
    old, new = (json.loads(json.dumps(c, default=str)) for c in (old, new)) if not prefix else (old, new)
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) | set(new), key=str)
                for d in config_differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    key = prefix.rstrip(".")
    return [] if old == new or key in RESUMABLE else [key]


def later_changes(old: dict, new: dict, step: int) -> list[str]:
    """The differences a run resumed at `step` may take: phase fields added to PhaseConfig since the
    checkpoint, at the default that keeps the old behaviour, and segments that start at or after
    `step` appended, edited or dropped (they change only batches not drawn yet; those that start
    before it must stay as they were)."""
    old_phase, new_phase = (json.loads(json.dumps(c.get("phase") or {}, default=str)) for c in (old, new))
    defaults = json.loads(json.dumps(asdict(PhaseConfig("defaults", (), {})), default=str))
    ok = [f"phase.{k}" for k in set(new_phase) - set(old_phase) - {"segments"} if new_phase[k] == defaults.get(k)]
    old_seg, new_seg = old_phase.get("segments") or [], new_phase.get("segments") or []
    if [seg for seg in old_seg if seg[0] < step] == [seg for seg in new_seg if seg[0] < step]:
        ok.append("phase.segments")
    return ok


def _check_config(old, new: dict, ck: Path, step: int) -> None:
    if old is None:  # a checkpoint from before settings were stored: nothing to compare
        return
    allowed = set(later_changes(old, new, step))
    diff = [d for d in config_differences(old, new) if d not in allowed]
    if diff:
        shown = ", ".join(diff[:12]) + (f" and {len(diff) - 12} more" if len(diff) > 12 else "")
        raise CheckpointError(f"cannot resume from {ck}: the run was started with other settings ({shown}); "
                              "resume with the original settings (its train_config.json), or start afresh "
                              "(--no-resume, or resume=False) or in a new folder")


def _candidates(ckpts: Path) -> list[Path]:
    """Checkpoint folders, newest step first (the `latest` pointer is only a hint: a kill between
    the rename and the pointer's update leaves it one behind)."""
    if not ckpts.is_dir():
        return []
    return sorted((p for p in ckpts.glob("step_*") if p.is_dir() and p.name[5:].isdigit()),
                  key=lambda p: int(p.name[5:]), reverse=True)


def _read_state(ck: Path) -> dict:
    try:
        meta = json.loads((ck / "state.json").read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"state.json unreadable ({type(e).__name__})") from None
    if not (isinstance(meta, dict) and type(meta.get("step")) is int and isinstance(meta.get("history"), list)):
        raise CheckpointError("state.json lacks its step or history")
    if meta["step"] != int(ck.name[5:]):
        raise CheckpointError(f"state.json says step {meta['step']}, the folder {ck.name}")
    return meta


def _read(ck: Path, model) -> tuple[dict, dict, dict]:
    """Everything a checkpoint holds, read and checked, nothing applied."""
    meta = _read_state(ck)
    weights = read_weights(model, ck / "model.safetensors")
    try:
        state = torch.load(ck / "optimizer.pt", map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a damaged pickle fails in many ways (weights_only runs no code)
        raise CheckpointError(f"optimizer.pt unreadable ({type(e).__name__})") from None
    if not (isinstance(state, dict) and {"optimizer", "scheduler", "torch_rng"} <= set(state)
            and isinstance(state["optimizer"], dict) and torch.is_tensor(state["torch_rng"])
            and state["torch_rng"].dtype == torch.uint8):
        raise CheckpointError("optimizer.pt lacks the optimizer, scheduler or RNG state")
    bad = [k for k, v in _tensors(state["optimizer"]) if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"optimizer.pt holds NaN or Inf (e.g. {bad[:2]})")
    return meta, weights, state


def _tensors(obj, prefix: str = ""):
    if torch.is_tensor(obj):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors(v, f"{prefix}{k}.")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{prefix}{i}.")


def _apply(ck: Path, weights: dict, state: dict, model, optimizer, scheduler, aux) -> None:
    apply_weights(model, weights)
    try:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        if aux is not None and state.get("aux") is not None:
            aux.load_state_dict(state["aux"])
    except (ValueError, KeyError, RuntimeError, TypeError) as e:
        raise CheckpointError(f"{ck}: its optimizer state does not fit this run's trainable parameters ({e}); "
                              "resume with the original phase, or start afresh") from e
