"""Image outputs as PNG files of their own, in a temp folder swept of old files now and then.

Gradio writes a returned array into its cache at a path named by the content's hash, rewriting it
in place on every request, so two identical requests at once could serve a half-written file; a
returned file is copied into the cache atomically instead."""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

PNG_MAX_AGE_S = 3600  # image files handed to gradio are removed after this long
PNG_SWEEP_EVERY_S = 60  # ... by a sweep of the folder at most this often (not on every request)
_last_sweep = {"at": 0.0}


def png_folder() -> Path:
    """<tempdir>/arrcoc-demo, created on first use."""
    folder = Path(tempfile.gettempdir()) / "arrcoc-demo"
    folder.mkdir(exist_ok=True)
    return folder


def sweep(folder: Path, now: float | None = None) -> None:
    """Remove PNGs older than PNG_MAX_AGE_S from `folder`, unless a sweep ran in the last
    PNG_SWEEP_EVERY_S (requests are many; one sweep a minute is enough)."""
    now = time.time() if now is None else now
    if now - _last_sweep["at"] < PNG_SWEEP_EVERY_S:
        return
    _last_sweep["at"] = now
    for old in folder.glob("*.png"):
        try:
            if now - old.stat().st_mtime > PNG_MAX_AGE_S:
                old.unlink()
        except OSError:  # another request swept it first
            pass


def png_file(rgb: np.ndarray) -> str:
    """An image output (H, W, 3 uint8) written to a PNG file of its own; returns its path.
    Files older than PNG_MAX_AGE_S are swept on the way, at most every PNG_SWEEP_EVERY_S."""
    from PIL import Image

    folder = png_folder()
    sweep(folder)
    fd, path = tempfile.mkstemp(suffix=".png", dir=folder)
    with os.fdopen(fd, "wb") as fh:
        Image.fromarray(rgb).save(fh, format="PNG")
    return path
