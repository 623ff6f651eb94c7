"""Our weights: safetensors + the resolved JSON config beside them, always written atomically
(temp file in the same folder, fsync, os.replace), so a killed process never leaves half a file;
loaded all or nothing, after checking keys, shapes, finiteness and the stored checksum.

A saved pipeline folder (`Pipeline.save_pretrained`) is the Hugging Face layout: config.json (the
resolved pipeline config + `model_type`, `architectures`), model.safetensors, README.md (model card)."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .errors import CheckpointError, InputError

log = logging.getLogger(__name__)
# Frozen parts that are loaded from their own packages, never stored in our files.
EXTERNAL_PREFIXES = ("query_encoder.",)
CHECKSUM_KEY = "arrcoc_sha256"  # save_weights' metadata entry: sha256 of the stored tensors
CONFIG_FILE, WEIGHTS_FILE, CARD_FILE = "config.json", "model.safetensors", "README.md"  # a saved folder
MODEL_TYPE = "arrcoc"  # config.json's model_type: how transformers' AutoConfig finds ArrcocConfig (arrcoc_lab.hf)
ARCHITECTURES = ("ArrcocModel",)
HF_KEYS = ("architectures", "transformers_version")  # what transformers adds to a config; not pipeline settings


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


def stored_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors our files hold for `model` (external parts out, tied tensors once), by name."""
    return _own_state(model)


def write_jsonl(path: str | Path, rows, default=float) -> None:
    """One JSON object per line, written atomically."""
    atomic_write_text(path, "".join(json.dumps(r, default=default) + "\n" for r in rows))


def model_state(model: nn.Module, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    state = {k: v.detach().cpu().contiguous() for k, v in _own_state(model).items()}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    return state


def state_checksum(state: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order: written into the
    file's metadata by save_weights and checked by read_weights, so a flipped bit is caught."""
    h = hashlib.sha256()
    for k in sorted(state):
        v = state[k].detach().cpu().contiguous()
        h.update(f"{k}|{v.dtype}|{tuple(v.shape)}\n".encode())
        if v.numel():
            h.update(v.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_weights(model: nn.Module, path: str | Path, config: dict | None = None, dtype: torch.dtype | None = None,
                 metadata: dict | None = None) -> None:
    """Write model.safetensors (and config.json beside it when a config is given). The metadata
    carries the tensors' checksum (CHECKSUM_KEY) beside the caller's entries."""
    path = Path(path)
    state = model_state(model, dtype)
    meta = {k: str(v) for k, v in (metadata or {}).items()} | {CHECKSUM_KEY: state_checksum(state)}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))
    if config is not None:
        atomic_write_text(path.with_name("config.json"), json.dumps(config, indent=2, sort_keys=True))


def read_weights(model: nn.Module, path: str | Path) -> dict[str, torch.Tensor]:
    """Read and check our safetensors file for `model` without changing it: every key and shape
    must match, every floating-point tensor must be finite, and the checksum (in files that carry
    one) must agree. Any problem is a CheckpointError naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
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
    if CHECKSUM_KEY in meta and state_checksum(state) != meta[CHECKSUM_KEY]:
        raise CheckpointError(f"weights {path} are corrupt: their checksum does not match the one written with them "
                              "(a changed or flipped byte); use an intact copy")
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"weights {path} hold NaN or Inf in {len(bad)} tensors (e.g. {bad[:3]}); the file is "
                              "corrupt or was saved from a diverged run")
    return state


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load our safetensors file into `model`, all or nothing: read_weights checks it first."""
    state = read_weights(model, path)
    apply_weights(model, state)
    log.info("loaded %d tensors from %s", len(state), path)


def apply_weights(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy a state that read_weights checked into `model`."""
    with torch.no_grad():
        for k, v in _own_state(model).items():
            v.copy_(state[k].to(v.dtype))


def same_weights(model: nn.Module, path: str | Path) -> bool:
    """Whether `model` still holds exactly the tensors of our file `path` (compared in the file's
    dtypes, so fp32 weights loaded from an fp16 file match it); False when the file is unreadable."""
    try:
        own = _own_state(model)
        with safe_open(str(path), "pt") as f:
            if set(f.keys()) != set(own):
                return False
            for k, v in own.items():
                t = f.get_tensor(k)
                if not torch.equal(v.detach().cpu().to(t.dtype), t):
                    return False
        return True
    except (SafetensorError, OSError, ValueError, RuntimeError):
        return False


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata entries of our safetensors file ({} when it carries none or cannot be read)."""
    try:
        with safe_open(str(path), "pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError):
        return {}


def hf_config(config: dict) -> dict:
    """A resolved pipeline config as a Hugging Face folder's config.json: + model_type, architectures."""
    return {**config, "model_type": MODEL_TYPE, "architectures": list(ARCHITECTURES)}


def read_config_json(path: str | Path, error: type[ValueError] = CheckpointError) -> dict:
    """A config.json (ours, or a saved folder's with transformers' keys) as the pipeline config's
    dict: a model_type other than ours is refused, transformers' own keys are dropped. Problems
    raise `error` (CheckpointError for a folder, InputError for a config the caller named)."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise error(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"cannot read config file {path}: damaged or not JSON ({e})") from None
    if not isinstance(d, dict):
        raise error(f"cannot read config file {path}: it holds a {type(d).__name__}, not a JSON object")
    kind = d.pop("model_type", MODEL_TYPE)
    if kind != MODEL_TYPE:
        raise error(f"config file {path} describes a {kind!r} model, not an ARR-COC pipeline (model_type {MODEL_TYPE!r})")
    return {k: v for k, v in d.items() if k not in HF_KEYS and not k.startswith("_")}


def check_folder(folder: str | Path, weights: bool = True) -> Path:
    """A saved pipeline folder, checked before anything is built: it exists and holds config.json
    (and model.safetensors, unless the caller brings other weights). CheckpointError otherwise."""
    folder = Path(folder)
    layout = f"a folder written by save_pretrained holds {CONFIG_FILE}, {WEIGHTS_FILE} and {CARD_FILE}"
    if folder.is_file():
        raise InputError(f"{folder} is a file, not a pipeline folder: a weights file loads with "
                         "load_pipeline(preset, weights=file)")
    if not folder.is_dir():
        raise CheckpointError(f"pipeline folder not found: {folder} ({layout})")
    needed = (CONFIG_FILE, WEIGHTS_FILE) if weights else (CONFIG_FILE,)
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        raise CheckpointError(f"pipeline folder {folder} has no {' or '.join(missing)}: {layout}; "
                              "copy the folder again or save it anew")
    return folder
