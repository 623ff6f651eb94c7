"""Experiment tracking through Accelerate's trackers: TensorBoard by default when it is installed.

`TrainConfig.log_with` picks the trackers: "auto" (TensorBoard when the `tensorboard` package is
installed, else none), "none", or a comma list of Accelerate tracker names ("tensorboard",
"wandb", "mlflow", …; "all" for every installed one). Each history row — losses, the answer loss
per difficulty and per family, level usage, average tokens, learning rate, wall time — is logged
at its step under a grouped tag (`tag`); TensorBoard's event files go to
`<out_dir>/tensorboard/<phase>/` (`tensorboard --logdir runs/lab`). Each sitting opens its event
file with a restart marker (SummaryWriter's purge_step 0: readers drop what earlier sittings
logged) and logs the history it resumed from before its new rows, so the curves are history.json's,
also after a kill past the last checkpoint and for runs begun without a tracker.
Tracking reads the rows and nothing else: no RNG, no tensors, no change to what a step computes.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError

AUTO, NONE = "auto", "none"
TRACKER_DIR = "tensorboard"  # under the run's output folder


def trackers(log_with: str) -> list[str]:
    """The Accelerate tracker names `log_with` asks for; an unknown or uninstalled one is an error."""
    from accelerate.tracking import get_available_trackers
    from accelerate.utils import LoggerType

    spec = str(log_with).strip().lower()
    if spec in ("", NONE):
        return []
    if spec == AUTO:
        return ["tensorboard"] if _tensorboard_usable() else []
    available = {str(getattr(t, "value", t)) for t in get_available_trackers()} - (
        set() if _tensorboard_usable() else {"tensorboard"})  # Accelerate counts a package it cannot start
    names = list(dict.fromkeys(n.strip() for n in spec.split(",") if n.strip()))
    known = [str(t.value) for t in LoggerType]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InputError(f"log_with {log_with!r}: unknown tracker(s) {unknown}; accepted: {AUTO!r}, {NONE!r} "
                         f"or a comma list of {known}")
    missing = [n for n in names if n != "all" and n not in available]
    if missing:
        raise InputError(f"log_with {log_with!r}: {missing} not installed (installed: {sorted(available) or 'none'}); "
                         f"install it, or use {AUTO!r} or {NONE!r}")
    return names


def _tensorboard_usable() -> bool:
    """Whether Accelerate's TensorBoard tracker can start (it writes through torch's SummaryWriter,
    which needs the tensorboard package, or through tensorboardX)."""
    for module in ("torch.utils.tensorboard", "tensorboardX"):
        try:
            __import__(module)
            return True
        except ImportError:
            continue
    return False


def accelerator_kwargs(names: list[str], out_dir: str | Path) -> dict:
    """What `Accelerator(...)` takes for these trackers (nothing when there are none)."""
    if not names:
        return {}
    from accelerate.utils import ProjectConfiguration

    out_dir = Path(out_dir)
    return {"log_with": names, "project_config": ProjectConfiguration(project_dir=str(out_dir),
                                                                      logging_dir=str(out_dir / TRACKER_DIR))}


def tag(key: str) -> str:
    """A history key's tracker tag, grouped: loss/…, answer/<difficulty or family>, allocation/…,
    reader/…, train/…."""
    if key in ("lr", "wall_s"):
        return f"train/{key}"
    if key == "avg_tokens" or (key.startswith("level") and key.endswith("_share")):
        return f"allocation/{key}"
    if key.startswith("answer_"):
        return f"answer/{key[len('answer_'):]}"
    if key == "read_acc":
        return f"reader/{key}"
    return f"loss/{key}"


def flat_config(config: dict, prefix: str = "") -> dict:
    """A run config as flat hyper-parameters ("phase.lr": 0.001, …): scalars kept, None and lists as text."""
    out = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out.update(flat_config(v, f"{prefix}{k}."))
        elif isinstance(v, (bool, int, float, str)):
            out[f"{prefix}{k}"] = v
        else:
            out[f"{prefix}{k}"] = json.dumps(v, default=str)
    return out


class RunTracker:
    """The trackers of one run_phase call: started with the run's settings (as hyper-parameters) and
    its restored history, fed each new history row, finished on exit (also when training raises).
    Finishing stops the trackers only: `Accelerator.end_training` would also destroy the process
    group, which the caller owns (a notebook or a launcher may run more after the phase)."""

    def __init__(self, acc, names: list[str], phase: str, config: dict, history: list[dict]):
        self.acc, self.on = acc, bool(names)
        if self.on:
            acc.init_trackers(phase, config=flat_config(config), init_kwargs={"tensorboard": {"purge_step": 0}})
            for row in history:
                self.log(row)

    def log(self, row: dict) -> None:
        if self.on:
            self.acc.log({tag(k): float(v) for k, v in row.items()
                          if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}, step=int(row["step"]))

    def __enter__(self) -> "RunTracker":
        return self

    def __exit__(self, *exc) -> None:
        if self.on and self.acc.is_main_process:
            for tracker in self.acc.trackers:
                tracker.finish()
