"""Our weights: safetensors + the resolved JSON config beside them, always written atomically
(temp file in the same folder, fsync, os.replace), so a killed process never leaves half a file."""
from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import CheckpointError

log = logging.getLogger(__name__)
# Frozen parts that are loaded from their own packages, never stored in our files.
EXTERNAL_PREFIXES = ("query_encoder.",)


def atomic_write(path: str | Path, write) -> None:
    """Call write(tmp_path), then move tmp_path over path in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def _own_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's stored tensors: external parts left out, and each tied tensor (e.g. an LLM's
    lm_head tied to its input embedding) kept once, under its first name — safetensors refuses
    tensors that share memory, and loading the first name fills every name tied to it."""
    state, seen = {}, set()
    for k, v in model.state_dict().items():
        if k.startswith(EXTERNAL_PREFIXES):
            continue
        ident = (v.device, v.data_ptr(), tuple(v.shape), tuple(v.stride()))
        if v.numel() and v.device.type != "meta" and ident in seen:
            continue
        seen.add(ident)
        state[k] = v
    return state


def write_jsonl(path: str | Path, rows, default=float) -> None:
    """One JSON object per line, written atomically."""
    atomic_write_text(path, "".join(json.dumps(r, default=default) + "\n" for r in rows))


def model_state(model: nn.Module, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    state = {k: v.detach().cpu().contiguous() for k, v in _own_state(model).items()}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    return state


def save_weights(model: nn.Module, path: str | Path, config: dict | None = None, dtype: torch.dtype | None = None,
                 metadata: dict | None = None) -> None:
    """Write model.safetensors (and config.json beside it when a config is given)."""
    path = Path(path)
    meta = {k: str(v) for k, v in (metadata or {}).items()}
    atomic_write(path, lambda tmp: save_file(model_state(model, dtype), tmp, metadata=meta))
    if config is not None:
        atomic_write_text(path.with_name("config.json"), json.dumps(config, indent=2, sort_keys=True))


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load our safetensors file into `model`, checking every key and shape first."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read weights {path}: truncated or not a safetensors file ({e})") from e
    own = _own_state(model)
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = [f"{len(wrong)} shape mismatches (e.g. {'; '.join(wrong[:3])})" if wrong else "",
                 f"{len(missing)} missing keys (e.g. {missing[:3]})" if missing else "",
                 f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})" if unexpected else ""]
        raise CheckpointError(f"weights {path} do not match this model's configuration: "
                              + ", ".join(p for p in parts if p) + "; load them with the config.json saved beside them")
    with torch.no_grad():
        for k, v in own.items():
            v.copy_(state[k].to(v.dtype))
    log.info("loaded %d tensors from %s", len(own), path)
