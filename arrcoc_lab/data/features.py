"""Frozen-stage cache: SAM features (and the model-size pixels the analyzer's entropy reads) are
computed once per image and stored, not recomputed each epoch. A cache file is keyed by the
dataset spec and a fingerprint of the SAM weights, so a changed encoder never reuses stale features.
Each file also carries its scenes' questions, answers and boxes (safetensors metadata), so the one
pass that renders a scene fills both, and training never renders a cached scene again (a file
written before files carried them gets them added, once). Scenes are
rendered by `workers` processes while SAM encodes in this one (rendering, ~23 ms a scene on one
core, would otherwise bound a GPU run at tens of thousands of scenes). Files live under `cache/`
(git-ignored) and are written atomically."""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..checkpoint import atomic_write
from ..inputs import to_model_input

log = logging.getLogger(__name__)


@dataclass
class SceneTensors:
    features: torch.Tensor  # (N, C, Hp, Wp) float16 SAM features, one row per scene
    pixels: torch.Tensor  # (N, 3, S, S) uint8 model-size pixels
    scene_ids: list[int]  # scene index of each row
    fields: dict[str, list] | None = None  # SAMPLE_FIELDS of every sample, in order
    image_hw: tuple[int, int] | None = None  # size of the dataset's images (boxes are in their pixels)

    def rows(self, scene_indices) -> torch.Tensor:
        lookup = {s: i for i, s in enumerate(self.scene_ids)}
        return torch.tensor([lookup[int(s)] for s in scene_indices])


def sam_fingerprint(sam: torch.nn.Module) -> str:
    h = hashlib.sha1()
    for k, v in sorted(sam.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().numpy().tobytes()[:4096])
    return h.hexdigest()[:12]


CHUNK = 500  # scenes per cache file: a larger training set reuses the chunks it already has
SAMPLE_FIELDS = ("question", "answer", "target_box", "difficulty", "scene_index")


def default_workers() -> int:
    """Rendering processes when none are asked for: this process's share of the cores (launchers
    set LOCAL_WORLD_SIZE) but the one that encodes, at most 8."""
    share = (os.cpu_count() or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(0, min(8, share - 1))


@torch.no_grad()
def encode_scenes(model, dataset, cache_dir: str | Path = "cache", batch_size: int = 16,
                  progress: bool = True, workers: int | None = None) -> SceneTensors:
    """SAM features for every scene of `dataset` (a SceneBench/DocSynth-like object with
    `num_scenes` and `scene(i)`), read from cache chunks of CHUNK scenes where present, else
    rendered by `workers` processes (None: default_workers(); 0: in this process) and encoded here."""
    g = model.geometry
    name = f"{getattr(dataset, 'NAME', 'data')}-{getattr(dataset, 'split', 'x')}-{g.image_size}-{sam_fingerprint(model.sam)}"
    n = dataset.num_scenes
    workers = default_workers() if workers is None else workers
    if workers < 0:
        raise ValueError(f"workers must be ≥ 0, got {workers}")
    feats, pix, rows, image_hw = [], [], [], None
    bar = tqdm(total=n, desc=f"SAM features {name}", disable=not progress)
    for lo in range(0, n, CHUNK):
        hi = min(lo + CHUNK, n)
        full = Path(cache_dir) / f"{name}-{lo:07d}-{lo + CHUNK:07d}.safetensors"
        part = Path(cache_dir) / f"{name}-{lo:07d}-{hi:07d}.safetensors"  # == full for a whole chunk
        hit = full if full.is_file() else part if part.is_file() else None
        if hit is not None:
            blob = load_file(str(hit))
            f, p = blob["features"][: hi - lo], blob["pixels"][: hi - lo]
            r, hw = _read_fields(hit, hi - lo)
            if r is None:  # a chunk from before chunks carried their questions: render them once, add them
                r, hw = _render_fields(dataset, lo, lo + len(blob["features"]), batch_size, workers)
                atomic_write(hit, lambda tmp: save_file(blob, tmp, _meta(r, hw)))
                r = r[: hi - lo]
        else:
            f, p, r, hw = _encode_range(model, dataset, lo, hi, batch_size, workers, bar)
            atomic_write(part, lambda tmp: save_file({"features": f.contiguous(), "pixels": p.contiguous()}, tmp,
                                                     _meta(r, hw)))
            log.info("cached SAM features of scenes %d..%d at %s", lo, hi, part)
        feats.append(f)
        pix.append(p)
        rows += r
        image_hw = hw
        bar.n = hi
        bar.refresh()
    bar.close()
    return SceneTensors(torch.cat(feats), torch.cat(pix), list(range(n)), _fields(rows, len(dataset)), image_hw)


def _meta(rows: list, image_hw) -> dict[str, str]:
    return {"scene_fields": json.dumps(rows, default=_plain), "image_hw": json.dumps(image_hw)}


def _read_fields(path: Path, n: int) -> tuple[list | None, tuple[int, int] | None]:
    """Per-scene sample fields stored with a chunk (None for chunks written before they were)."""
    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata() or {}
    if "scene_fields" not in meta:
        return None, None
    return json.loads(meta["scene_fields"])[:n], tuple(json.loads(meta["image_hw"]))


def _fields(rows: list, n_samples: int) -> dict[str, list]:
    """Per-scene lists of per-sample [field values] → {field: values of every sample}."""
    flat = [sample for scene in rows for sample in scene][:n_samples]
    fields = {k: [s[i] for s in flat] for i, k in enumerate(SAMPLE_FIELDS)}
    fields["target_box"] = [None if b is None else tuple(b) for b in fields["target_box"]]
    return fields


class _Rendered(torch.utils.data.Dataset):
    """Scenes lo..hi of a synthetic set, rendered (in a worker process) to model-size uint8 pixels
    and the text fields of their samples."""

    def __init__(self, dataset, lo: int, hi: int, size: int):
        self.dataset, self.lo, self.hi, self.size = dataset, lo, hi, size

    def __len__(self):
        return self.hi - self.lo

    def __getitem__(self, k: int):
        scene = self.dataset.scene(self.lo + k)
        pixels = to_model_input(scene.image, self.size)[0].round().clamp(0, 255).to(torch.uint8)  # (3, S, S); resizing leaves fractions
        return pixels, [[getattr(s, f) for f in SAMPLE_FIELDS] for s in scene.samples], tuple(scene.image.shape[:2])


def _collate(batch):  # [(pixels, fields, hw)] -> ((B, 3, S, S), [fields], hw)
    return torch.stack([x[0] for x in batch]), [x[1] for x in batch], batch[0][2]


def _one_thread(_):  # rendering workers must not fight the encoder for cores
    torch.set_num_threads(1)


def scene_loader(dataset, lo: int, hi: int, size: int, batch_size: int, workers: int):
    """Batches (pixels (B, 3, size, size) uint8, per-scene sample fields, image (h, w)) of scenes
    lo..hi, rendered by `workers` processes (0: in this one)."""
    return torch.utils.data.DataLoader(_Rendered(dataset, lo, hi, size), batch_size=batch_size, num_workers=workers,
                                       collate_fn=_collate, worker_init_fn=_one_thread if workers else None,
                                       prefetch_factor=4 if workers else None)


def _encode_range(model, dataset, lo: int, hi: int, batch_size: int, workers: int, bar):
    g = model.geometry
    device = next(model.sam.parameters()).device
    loader = scene_loader(dataset, lo, hi, g.image_size, batch_size, workers)
    feats, pix, rows, hw = [], [], [], None
    for pixels, fields, hw in loader:  # pixels (B, 3, S, S) uint8
        feats.append(model.encode_image(pixels.to(device).float()).half().cpu())
        pix.append(pixels)
        rows += fields
        bar.update(len(pixels))
    return torch.cat(feats), torch.cat(pix), rows, hw


def _render_fields(dataset, lo: int, hi: int, batch_size: int, workers: int) -> tuple[list, tuple[int, int]]:
    """Per-scene sample fields of scenes lo..hi (rendered; the pixels are dropped)."""
    loader = scene_loader(dataset, lo, hi, dataset.image_size, batch_size, workers)
    rows, hw = [], None
    for _, fields, hw in tqdm(loader, desc=f"questions of scenes {lo}..{hi}", leave=False):
        rows += fields
    return rows, hw


def _plain(x):  # numpy scalars in boxes → JSON numbers
    return x.item() if hasattr(x, "item") else str(x)


def target_cells(boxes: list, geometry, image_hw: tuple[int, int]) -> torch.Tensor:
    """(B, Hc, Wc) 1.0 where a cell overlaps the sample's target box, NaN for 'global' targets
    (no region label: the relevance loss skips them)."""
    n = geometry.cells_per_side
    cells = geometry.cell_boxes(*image_hw)  # (n, n, 4)
    out = torch.full((len(boxes), n, n), float("nan"))
    for b, box in enumerate(boxes):
        if box is None:
            continue
        x0, y0, x1, y1 = box
        ix = np.minimum(cells[..., 2], x1) - np.maximum(cells[..., 0], x0)
        iy = np.minimum(cells[..., 3], y1) - np.maximum(cells[..., 1], y0)
        out[b] = torch.from_numpy(((ix > 0) & (iy > 0)).astype(np.float32))
    return out
