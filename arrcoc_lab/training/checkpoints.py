"""Exact-resume checkpoints: folders `checkpoints/step_NNNNNN/` (model.safetensors, optimizer.pt,
state.json) written to a temp folder and renamed in one step; `checkpoints/latest` names the newest."""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import atomic_write_text, load_weights, save_weights

log = logging.getLogger(__name__)


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
