"""Stage probes: where along the pipeline does a visual property stop being readable?

The same small probe (3×3 conv, ReLU, global max pool, linear) is trained on the output of each
stage — SAM features, then the compressor's, CLIP's, the adapter's and the projector's tokens at one
LOD level, laid back on their spatial grid — to predict a per-image label (e.g. SceneBench's
landmark kind). A stage whose probe falls to chance has lost the property, whatever the stages
after it do. A diagnostic for training, not part of the model.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..modeling.trace import STAGES as MODEL_STAGES

STAGES = ("sam",) + MODEL_STAGES[MODEL_STAGES.index("compressor"):MODEL_STAGES.index("llm")]  # stages whose output is a token grid
TEXT_WINDOW_PX = 96  # text probe: image area around the sign's centre the probe sees
LANDMARKS = ("tower", "arch", "dome", "spire", "wheel", "pagoda")  # SceneBench landmark kinds


@dataclass
class ProbeResult:
    stage: str
    test_accuracy: float  # held-out accuracy of the probe
    chance: float  # accuracy of always answering the most frequent training label
    grid: tuple[int, int, int]  # (channels, height, width) the probe saw
    head: str = "max"  # probe kind: "max" (3x3 conv, global max) or "cnn" (position-aware, see probe_accuracy)


def answer_labels(data, classes=LANDMARKS) -> tuple[list[int], torch.Tensor]:
    """(scene indices, label per scene) from the training questions whose answer is one of `classes`."""
    label = {}
    for a, s in zip(data.answers, data.scene_index):
        if a in classes:
            label[s] = classes.index(a)
    if not label:
        raise InputError(f"no question in the data has an answer among {list(classes)}")
    scenes = sorted(label)
    return scenes, torch.tensor([label[s] for s in scenes])


def text_labels(data) -> tuple[list[int], list, torch.Tensor]:
    """(scene index, target box, first digit) of every question whose answer is a number sign's
    digits: sign text, the detail the LLM fails to read."""
    keep = [i for i, (a, b) in enumerate(zip(data.answers, data.boxes)) if a.isdigit() and b is not None]
    if not keep:
        raise InputError("no question in the data is answered by a number sign")
    return ([data.scene_index[i] for i in keep], [data.boxes[i] for i in keep],
            torch.tensor([int(data.answers[i][0]) for i in keep]))


def crop_windows(grid: torch.Tensor, boxes: list, image_size: int, window: int) -> torch.Tensor:
    """(N, D, G, G) grids → (N, D, window, window) crops centred on each box (x0, y0, x1, y1) in
    pixels, shifted to stay inside the grid."""
    G = grid.shape[-1]
    out = []
    for x, (x0, y0, x1, y1) in zip(grid, boxes):
        cy, cx = (y0 + y1) / 2 * G / image_size, (x0 + x1) / 2 * G / image_size
        top = int(min(max(round(cy - window / 2), 0), G - window))
        left = int(min(max(round(cx - window / 2), 0), G - window))
        out.append(x[:, top:top + window, left:left + window])  # (D, G, G) -> (D, w, w)
    return torch.stack(out)


@torch.no_grad()
def stage_grids(model, features: torch.Tensor, level: int, batch: int = 100, boxes: list | None = None,
                window: int | None = None, stages: tuple[str, ...] = STAGES) -> dict[str, torch.Tensor]:
    """Every stage's output for SAM features (N, C, Hp, Wp), all cells at LOD `level`, as
    (N, D, G, G) grids (G = cells per side × tokens per cell side); SAM's own map is kept as is.
    With `boxes` (one per row) and `window`, each grid is cropped to a window × window patch around
    its box (and SAM's map to the same image area), so a probe sees only the target. `stages`
    picks which stages to return (the downstream is not run for SAM alone)."""
    g = model.geometry
    bad = set(stages) - set(STAGES)
    if bad or not stages:
        raise InputError(f"unknown stage(s) {sorted(bad)}; known: {list(STAGES)}")
    if not 0 <= level < len(g.levels):
        raise InputError(f"level {level} outside 0..{len(g.levels) - 1}")
    side = g.cells_per_side * g.level_side(level)
    out: dict[str, list] = {s: [] for s in STAGES}
    for i in range(0, len(features), batch):
        f = features[i:i + batch].float()

        def crop(x, w):  # (B, D, G, G) -> (B, D, w, w) around each row's box, or as is
            return x if boxes is None else crop_windows(x, boxes[i:i + batch], g.image_size, w)

        sam_window = None if window is None else max(1, round(window * f.shape[-1] / side))
        out["sam"].append(crop(f, sam_window).cpu())
        if set(stages) == {"sam"}:
            continue
        levels = torch.full((len(f), g.cells_per_side, g.cells_per_side), level, dtype=torch.long, device=f.device)
        d = model.downstream(f, levels)
        ts = d.tokens
        row = (ts.positions[..., 0] * side).long().clamp(0, side - 1)
        col = (ts.positions[..., 1] * side).long().clamp(0, side - 1)
        idx = row * side + col  # (B, T) raster index of each token on the grid
        for name, x in (("compressor", ts.tokens), ("clip", d.clip.tokens), ("adapter", d.adapter.tokens),
                        ("projector", d.visual)):
            grid = x.new_zeros(len(f), side * side, x.shape[-1])
            grid.scatter_(1, idx.unsqueeze(-1).expand_as(x), x)  # (B, T, D) -> (B, G·G, D)
            out[name].append(crop(grid.transpose(1, 2).reshape(len(f), -1, side, side), window).cpu())  # -> (B, D, G, G)
    return {k: torch.cat(out[k]) for k in STAGES if k in stages}


def _probe_net(head: str, channels: int, side: int, hidden: int, n_cls: int) -> nn.Module:
    if head == "max":  # where-invariant: says whether a pattern occurs anywhere
        return nn.Sequential(nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1),
                             nn.Flatten(), nn.Linear(hidden, n_cls))
    if head == "cnn":  # position-aware: three convs (strided on large inputs such as pixels), a 6x6 map, linear
        s = 2 if side > 24 else 1
        return nn.Sequential(nn.Conv2d(channels, hidden, 3, s, 1), nn.ReLU(), nn.Conv2d(hidden, hidden, 3, s, 1),
                             nn.ReLU(), nn.Conv2d(hidden, hidden, 3, 1, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(6),
                             nn.Flatten(), nn.Dropout(0.3), nn.Linear(hidden * 36, n_cls))
    raise InputError(f"unknown probe head {head!r}; known: ['max', 'cnn']")


def probe_accuracy(x: torch.Tensor, y: torch.Tensor, train_frac: float = 0.8, epochs: int = 20,
                   hidden: int = 64, lr: float = 2e-3, seed: int = 0, head: str = "max") -> tuple[float, float]:
    """Train a probe (`head`: "max" = 3x3 conv, ReLU, global max, linear; "cnn" = position-aware,
    with dropout and weight decay) on the first `train_frac` of (x (N, D, H, W), y (N,)); return
    (held-out accuracy, majority-class accuracy on the same held-out part)."""
    n_tr = int(train_frac * len(y))
    if n_tr < 1 or n_tr >= len(y):
        raise InputError(f"need samples on both sides of the split, got {len(y)} samples at train_frac {train_frac}")
    gen = torch.Generator().manual_seed(seed)
    mu, sd = x[:n_tr].mean((0, 2, 3), keepdim=True), x[:n_tr].std((0, 2, 3), keepdim=True) + 1e-6
    x = (x - mu) / sd  # per-channel standardisation, so stages of different scale compare fairly
    n_cls = int(y.max()) + 1
    with torch.random.fork_rng():  # init and dropout seeded: a probe's score does not depend on what ran before
        torch.manual_seed(seed)
        probe = _probe_net(head, x.shape[1], x.shape[-1], hidden, n_cls)
        opt = torch.optim.AdamW(probe.parameters(), lr, weight_decay=0.05 if head == "cnn" else 0.0)
        for _ in range(epochs):
            probe.train()
            for j in torch.randperm(n_tr, generator=gen).split(64):
                loss = F.cross_entropy(probe(x[j]), y[j])
                opt.zero_grad()
                loss.backward()
                opt.step()
    probe.eval()
    with torch.no_grad():
        acc = float((probe(x[n_tr:]).argmax(1) == y[n_tr:]).float().mean())
    majority = int(np.bincount(y[:n_tr].numpy(), minlength=n_cls).argmax())
    return acc, float((y[n_tr:] == majority).float().mean())


def probe_stages(model, data, level: int | None = None, classes=LANDMARKS, epochs: int = 20) -> list[ProbeResult]:
    """Probe every stage for the per-scene label given by `classes` (default: landmark kind) at
    LOD `level` (default: the uniform-16× level)."""
    level = model.geometry.uniform_level if level is None else level
    scenes, y = answer_labels(data, classes)
    feats = data.scenes.features[data.scenes.rows(scenes)]
    grids = stage_grids(model, feats, level)
    return _probe_all(grids, y, epochs)


def _probe_all(grids: dict[str, torch.Tensor], y: torch.Tensor, epochs: int,
               heads: tuple[str, ...] = ("max",)) -> list[ProbeResult]:
    """One probe per (head, stage) on the stages' inputs `grids` (name → (N, D, H, W)), in order."""
    results = []
    for head in heads:
        for stage, x in grids.items():
            acc, chance = probe_accuracy(x, y, epochs=epochs, head=head)
            results.append(ProbeResult(stage, acc, chance, tuple(x.shape[1:]), head))
    return results


REFERENCES = ("pixels", "patch_grid")  # sign_windows' image references


def sign_windows(model, data, scenes: list[int], boxes: list, level: int | None = None,
                 stages: tuple[str, ...] = STAGES, references: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Windows around each sign (one per scene index and box): `references` first — "pixels" (the
    96-px image window, cut to the pixel) and "patch_grid" (the same pixels on SAM's patch grid,
    each patch's 3·p² values as channels, cut to the patch: lossless) — then each stage in `stages`
    at LOD `level` (default: the top level), all as (N, D, w, w)."""
    g = model.geometry
    level = len(g.levels) - 1 if level is None else level
    bad = set(references) - set(REFERENCES)
    if bad:
        raise InputError(f"unknown reference(s) {sorted(bad)}; known: {list(REFERENCES)}")
    side = g.cells_per_side * g.level_side(level)
    window = max(1, min(side, round(TEXT_WINDOW_PX * side / g.image_size)))
    rows = data.scenes.rows(scenes)
    grids = stage_grids(model, data.scenes.features[rows], level, boxes=boxes, window=window,
                        stages=stages) if stages else {}  # references alone need no stage
    out = {}
    if references:
        px = data.scenes.pixels[rows].float() / 255  # (N, 3, S, S)
        if "pixels" in references:
            out["pixels"] = crop_windows(px, boxes, g.image_size, min(TEXT_WINDOW_PX, g.image_size))  # (N, 3, 96, 96)
        if "patch_grid" in references:
            grid = F.pixel_unshuffle(px, g.patch_size)  # (N, 3, S, S) -> (N, 3·p², S/p, S/p)
            out["patch_grid"] = crop_windows(grid, boxes, g.image_size, max(1, round(TEXT_WINDOW_PX / g.patch_size)))
    return out | grids


def probe_text(model, data, level: int | None = None, epochs: int = 20, max_samples: int = 2000,
               heads: tuple[str, ...] = ("max",), pixels: bool = False,
               stages: tuple[str, ...] = STAGES) -> list[ProbeResult]:
    """Probe every stage for the first digit of number signs, on a window around the sign (the
    location is given, as a reading head attending to the right tokens would have it), at LOD
    `level` (default: the top level, full resolution — the most any policy can give a sign), with
    each probe kind in `heads`. `pixels` adds two references before the stages: the image window
    itself ("pixels", cut to the pixel) and the same pixels rearranged onto SAM's patch grid
    ("patch_grid": each patch's 3·p² values as channels, cut to the patch like SAM's window). The
    patch grid holds everything the pixels do, so it is what a perfect encoder could pass on; a
    stage that scores like it has lost nothing the probe can use. `stages` limits the stages probed (e.g.
    ("sam",) to judge an encoder alone)."""
    scenes, boxes, y = text_labels(data)
    scenes, boxes, y = scenes[:max_samples], boxes[:max_samples], y[:max_samples]
    grids = sign_windows(model, data, scenes, boxes, level, stages, ("pixels", "patch_grid") if pixels else ())
    return _probe_all(grids, y, epochs, heads)
