"""The training data and the batch of each step.

Determinism by construction: the batch of step t and every random choice in it (allocation
budgets, utilities, Gumbel noise seeds) are drawn from generators seeded by (seed, t, sample
index), never from a global stream. So a resumed run continues exactly, and an N-process DDP run
sees the same global batch as a 1-process run (each process takes every N-th sample)."""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError
from ..data.phrasing import parse, rephrase
from ..data.features import SceneTensors, encode_scenes, target_cells
from ..modeling.allocator import solve_knapsack
from .config import TrainConfig
from .phases import PhaseConfig

TIER_OF = {"gist": 0, "detail": 2}  # tier label per difficulty: fast / accurate
GIST_SPOT_FAMILIES = ("landmark", "city")  # gist questions about one region, the landmark (PhaseConfig.gist_jitter)
COUNT_FAMILIES = ("count", "table_rows")  # gist questions that count things (PhaseConfig.count_share)


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

    @functools.cached_property
    def _detail_boxes(self) -> dict[int, list]:
        """scene index → the boxes its detail questions ask about."""
        out: dict[int, list] = {}
        for j, (d, box) in enumerate(zip(self.difficulty, self.boxes)):
            if d == "detail" and box is not None:
                out.setdefault(self.scene_index[j], []).append(box)
        return out

    @functools.cached_property
    def is_detail(self) -> np.ndarray:
        """Per sample: a fine-detail question (sample_indices reads it every step)."""
        return np.array([d == "detail" for d in self.difficulty], dtype=bool)

    @functools.cached_property
    def family(self) -> np.ndarray:
        """Per sample: its question's family (family_of), parsed once."""
        return np.array([family_of(q) for q in self.questions])

    @functools.cached_property
    def spot_family(self) -> np.ndarray:
        """Per sample: a question about the landmark (GIST_SPOT_FAMILIES), parsed once."""
        return np.isin(self.family, GIST_SPOT_FAMILIES)

    @functools.cached_property
    def count_family(self) -> np.ndarray:
        """Per sample: a counting question (COUNT_FAMILIES), parsed once."""
        return np.isin(self.family, COUNT_FAMILIES)

    def other_sign(self, i: int):
        """The box of another detail question's region in sample i's scene (None if there is none):
        a reading view shows it beside the asked-about one, so the question has to pick."""
        others = [b for b in self._detail_boxes.get(self.scene_index[i], []) if b != self.boxes[i]]
        return others[0] if others else None


def parse_mix(data: str, n_scenes: int) -> list[tuple[str, int]]:
    """A training set spec: one dataset ("scenebench:train") or several joined by "+", each with an
    optional scene count ("scenebench:train@12000+docsynth:train@3000"); the default count is
    `n_scenes`."""
    out = []
    for part in data.split("+"):
        spec, _, n = part.strip().partition("@")
        try:
            count = int(n) if n else n_scenes
        except ValueError:
            raise InputError(f"training data {part!r}: the count after @ must be an integer, e.g. scenebench:train@3000") from None
        if count < 1:
            raise InputError(f"training data {part!r}: need at least one scene, got {count}")
        out.append((spec, count))
    return out


def load_train_data(model, cfg: TrainConfig) -> TrainData:
    """The training samples of every dataset in `cfg.data` (see parse_mix), their SAM features read
    from the cache (computed and cached once when missing). Scenes of a later dataset are numbered
    after the earlier ones'."""
    parts = [_load_one(model, spec, n, cfg) for spec, n in parse_mix(cfg.data, cfg.n_scenes)]
    return parts[0] if len(parts) == 1 else _concat(parts)


def _load_one(model, spec: str, n_scenes: int, cfg: TrainConfig) -> TrainData:
    from ..data import SYNTHETIC, load_dataset

    g = model.geometry
    name = spec.split(":", 1)[0]
    per_scene = SYNTHETIC[name].QUESTIONS_PER_SCENE if name in SYNTHETIC else 1
    ds = load_dataset(spec, n=n_scenes * per_scene, image_size=render_size(g, name), patch_size=g.patch_size)
    scenes = encode_scenes(model, ds, cfg.cache_dir, progress=cfg.progress, workers=cfg.render_workers)
    f = scenes.fields
    return TrainData(scenes, f["question"], f["answer"], f["target_box"], f["difficulty"], f["scene_index"],
                     scenes.image_hw)


def render_size(g, name: str) -> int:
    """The side at which dataset `name` renders its training scenes: the model's input size, except
    that the synthetic sets need ≥ 32 patches a side, so a geometry with fewer (the hf-vlm preset's
    LLaVA-1.5, 24 tokens a side; the tiny preset) renders them at 32 patches and encode_scenes
    resizes them to the model's input, as evaluation does (evaluate.load_eval_set). The boxes stay
    in the rendered image's pixels (TrainData.image_hw), which target_cells maps onto the cells.
    With ≥ 32 patches a side (lab, paper) this is the model's input size itself."""
    from ..data import SYNTHETIC

    return max(g.image_size, 32 * g.patch_size) if name in SYNTHETIC else g.image_size


def _concat(parts: list[TrainData]) -> TrainData:
    if len({p.image_hw for p in parts}) > 1:
        raise InputError(f"training datasets render at different sizes {[p.image_hw for p in parts]}; mix only "
                         "datasets of one image size")
    offsets = np.cumsum([0] + [len(p.scenes.scene_ids) for p in parts[:-1]])
    scenes = SceneTensors(torch.cat([p.scenes.features for p in parts]), torch.cat([p.scenes.pixels for p in parts]),
                          [o + s for o, p in zip(offsets, parts) for s in p.scenes.scene_ids], None, parts[0].image_hw)
    cat = lambda key: [x for p in parts for x in getattr(p, key)]
    return TrainData(scenes, cat("questions"), cat("answers"), cat("boxes"), cat("difficulty"),
                     [int(o + s) for o, p in zip(offsets, parts) for s in p.scene_index], parts[0].image_hw)


def sample_indices(data: TrainData, phase: PhaseConfig, step: int, cfg: TrainConfig) -> np.ndarray:
    """The global batch of `step`, drawn without replacement; `phase.detail_share` reweights the
    draw so that share of the batch (in expectation) is fine-detail questions, `phase.spot_share`
    (when set) so that share is questions about the landmark, and `phase.count_share` (when set)
    so that share is counting questions; the other gist questions share what is left.
    `phase.detail_weights` weighs the detail families against each other within the detail share."""
    rng = np.random.default_rng([cfg.seed, step])
    if phase.detail_share is None:
        return rng.choice(len(data), size=cfg.batch_size, replace=False)
    detail = data.is_detail
    n_detail = int(detail.sum())
    if n_detail in (0, len(data)):
        return rng.choice(len(data), size=cfg.batch_size, replace=False)
    p = np.where(detail, phase.detail_share / n_detail, (1 - phase.detail_share) / (len(data) - n_detail))
    if phase.detail_weights:
        weight = detail.astype(float)
        for family, w in phase.detail_weights.items():
            weight[detail & (data.family == family)] = w
        p = np.where(detail, phase.detail_share * weight / weight.sum(), p)
    groups = [(getattr(data, mask) & ~detail, share) for mask, share in
              (("spot_family", phase.spot_share), ("count_family", phase.count_share)) if share is not None]
    groups = [(mask, share) for mask, share in groups if mask.any()]
    rest = ~detail & ~np.logical_or.reduce([mask for mask, _ in groups] + [np.zeros_like(detail)])
    if groups and rest.any():  # (with no other gist question left the draw stays as detail_share has it)
        for mask, share in groups:
            p = np.where(mask, share / mask.sum(), p)
        p = np.where(rest, (1 - phase.detail_share - sum(share for _, share in groups)) / rest.sum(), p)
    k = min(cfg.batch_size, int((p > 0).sum()))
    return rng.choice(len(data), size=k, replace=False, p=p / p.sum())


def make_batch(data: TrainData, model, phase: PhaseConfig, step: int, cfg: TrainConfig, rank: int, world: int,
               device) -> dict:
    """The global batch of `step` (same for any number of processes); this process's share, drawn
    as the phase's segments say for that step."""
    g, phase = model.geometry, phase.at(step)
    idx = sample_indices(data, phase, step, cfg)
    mine = idx[rank::world]
    rows = data.scenes.rows([data.scene_index[i] for i in mine])
    boxes = [data.boxes[i] for i in mine]
    features, pixels = data.scenes.features[rows].float(), data.scenes.pixels[rows].float()
    detail = [data.difficulty[i] == "detail" for i in mine]
    families = [family_of(data.questions[i]) for i in mine]  # parsed once: the log's and gist_jitter's
    reading = phase.allocation == "mixed" and np.random.default_rng([cfg.seed, step, 5]).random() < phase.reading_steps
    others = [data.other_sign(i) for i in mine] if reading else []
    if reading and phase.reading_jitter < 1:
        boxes, others = roll_to_reading_spot(features, pixels, boxes, others, detail, phase.reading_jitter, g,
                                             data.image_hw, [cfg.seed, step], rank, world)
    if phase.gist_jitter < 1:  # the landmark questions' scenes, so the landmark sits at the spot
        spot = [f in GIST_SPOT_FAMILIES for f in families]
        boxes, _ = roll_to_reading_spot(features, pixels, boxes, [], spot, phase.gist_jitter, g, data.image_hw,
                                        [cfg.seed, step, 11], rank, world)
    batch = {
        "features": features.to(device),
        "pixels": pixels.to(device),
        "questions": rephrased([data.questions[i] for i in mine], phase.rephrase, cfg.seed, step, rank, world),
        "answers": [data.answers[i] for i in mine],
        "detail": torch.tensor(detail, device=device),
        "families": families,
        "tiers": torch.tensor([TIER_OF[data.difficulty[i]] for i in mine], device=device),
        "target_cells": target_cells(boxes, g, data.image_hw).to(device),
        "noise_seeds": [int(s) for s in np.random.default_rng([cfg.seed, step, 1]).integers(0, 2**31, cfg.batch_size)[rank::world]],
    }
    if phase.gist_weight != 1:  # normalised by the global batch's mean weight: chunks and processes add up
        weight = np.where(data.is_detail[idx], 1.0, phase.gist_weight)  # (global B,)
        batch["answer_weight"] = torch.tensor(weight[rank::world] / weight.mean(), dtype=torch.float32, device=device)
    if phase.allocation in ("mixed", "model"):
        batch["budgets"], batch["utility"] = mixed_allocation(
            batch["target_cells"], g, cfg.seed, step, rank, world, cfg.batch_size,
            detail=batch["detail"].tolist(), high_res_steps=phase.high_res_steps, full_steps=phase.full_steps)
    if reading:
        others = target_cells(others, g, data.image_hw).to(device)
        batch["levels"] = reading_views(batch, others, g, model.allocator.cfg.utility_exponent,
                                        reading_view_level(phase, step, cfg.seed, g), cfg.seed, step, rank, world)
        gist_share = phase.full_share if phase.full_gist_share is None else phase.full_gist_share
        if phase.full_share or gist_share:  # drawn over the global batch: the same samples for any number of processes
            share = np.where(data.is_detail[idx], phase.full_share, gist_share)  # (global B,) by question kind
            full = (np.random.default_rng([cfg.seed, step, 12]).random(len(idx)) < share)[rank::world]
            batch["levels"][torch.from_numpy(full)] = g.max_level_index  # (B, Hc, Wc): every cell at the top
    states = np.ones(len(mine), dtype=bool)
    if phase.question_states < 1:
        states = np.random.default_rng([cfg.seed, step, 10]).random(cfg.batch_size)[rank::world] < phase.question_states
        batch["question_states"] = states.tolist()
    if phase.question_dropout:
        drop = np.random.default_rng([cfg.seed, step, 6]).random(cfg.batch_size)[rank::world] < phase.question_dropout
        drop &= states  # a sample without question states keeps its byte prompt
        batch["prompts"] = ["" if d else q for d, q in zip(drop, batch["questions"])]
    return batch


def roll_to_reading_spot(features: torch.Tensor, pixels: torch.Tensor, boxes: list, others: list, move: list[bool],
                         jitter: float, g, image_hw: tuple[int, int], key: list[int], rank: int, world: int):
    """Reading views that place the sign (PhaseConfig.reading_jitter): each sample's scene with `move`
    (the detail samples; for gist_jitter the landmark questions, the landmark their "sign") is rolled
    in place, wrapping around, by whole patches so its sign's centre lands within ±jitter · half the
    image of a fixed reading spot (kept far enough from the border that the sign stays whole). The
    reading probe that reads 98 % of held-out signs saw each sign at one place in its window; with
    the sign anywhere, a fresh LLM did not start to use it (reports/lab/RUN.md).
    features (B, C, Gp, Gp) and pixels (B, 3, S, S) are rolled in place; returns the boxes and the
    other signs' boxes moved with them (an other sign cut by the wrap is dropped: None)."""
    G, n, cp = g.patches_per_side, g.cells_per_side, g.cell_patches
    spot = np.array([(n // 2 - 0.5) * cp, (n // 2) * cp])  # (y, x) in patches: lab (12, 16), a sign across two cells of a row
    unit = np.array([image_hw[0] / G, image_hw[1] / G])  # a patch in the boxes' pixels (y, x)
    px = pixels.shape[-1] // G  # a patch in the pixel tensor's pixels
    boxes, others = list(boxes), list(others)
    for k, (box, moved) in enumerate(zip(boxes, move)):
        if box is None or not moved:
            continue
        x0, y0, x1, y1 = box
        size = np.array([y1 - y0, x1 - x0]) / unit  # (h, w) patches
        centre = np.array([y0 + y1, x0 + x1]) / 2 / unit
        u = np.random.default_rng([*key, 9, rank + k * world]).uniform(-1, 1, 2)
        want = np.clip(spot + jitter * u * G / 2, size / 2 + 0.5, G - size / 2 - 0.5)
        dy, dx = (int(v) for v in np.round(want - centre))
        features[k] = torch.roll(features[k], (dy, dx), (-2, -1))  # (C, Gp, Gp), content moves by (dy, dx) patches
        pixels[k] = torch.roll(pixels[k], (dy * px, dx * px), (-2, -1))
        move = lambda b: (b[0] + dx * unit[1], b[1] + dy * unit[0], b[2] + dx * unit[1], b[3] + dy * unit[0])
        boxes[k] = move(box)
        if others and others[k] is not None:
            o = move(others[k])
            inside = 0 <= o[0] and o[2] <= image_hw[1] and 0 <= o[1] and o[3] <= image_hw[0]
            others[k] = o if inside else None
    return boxes, others


def split_by_tokens(batch: dict, n: int, g) -> list[dict]:
    """A reading step's batch cut into `n` chunks of similar token counts (sorted): each chunk pads
    only to its own longest sample, and the loop accumulates their gradients, so the step's gradient
    is the whole batch's. Samples at the full view (PhaseConfig.full_share) make the last chunk on
    their own, so no other sample pads to 1,024 tokens; the count stays `n` whether a process has
    any or not (each chunk's backward synchronises the processes). Batches without given levels stay whole."""
    if n <= 1 or "levels" not in batch:
        return [batch]
    tokens = torch.tensor(g.levels)[batch["levels"]].flatten(1).sum(1)  # (B,)
    order = torch.argsort(tokens, stable=True)
    full = tokens[order] == g.max_tokens
    # tensor_split makes exactly the parts asked for (chunk may make fewer), none empty while B ≥ n
    if full.any() and (~full).sum() >= n - 1:
        parts = list(torch.tensor_split(order[~full], n - 1)) + [order[full]]
    else:
        parts = list(torch.tensor_split(order, n))
    return [take(batch, part.tolist()) for part in parts if len(part)]


def take(batch: dict, idx: list[int]) -> dict:
    """The samples `idx` of a batch (tensors and per-sample lists alike)."""
    return {k: v[idx] if torch.is_tensor(v) else [v[i] for i in idx] if isinstance(v, list) else v
            for k, v in batch.items()}


@functools.lru_cache(maxsize=4096)
def family_of(question: str) -> str:
    """The question family of a template question (per-family losses in the log); "other" else."""
    try:
        return parse(question).family
    except ValueError:
        return "other"


def rephrased(questions: list[str], share: float, seed: int, step: int, rank: int, world: int) -> list[str]:
    """`share` of the questions in another phrasing from the training generator (data/phrasing.py:
    synonyms, word order, politeness, typos), drawn per (seed, step, sample): the analyzer and the
    LLM learn the question, not three templates. Questions it does not know are kept as they are."""
    if not share:
        return questions
    out = []
    for k, q in enumerate(questions):
        r = np.random.default_rng([seed, step, 9, rank + k * world])
        if r.random() < share:
            try:
                q = rephrase(q, r, "train")
            except ValueError:  # not a template question (a real dataset's): kept
                pass
        out.append(q)
    return out


def reading_view_level(phase: PhaseConfig, step: int, seed: int, g) -> int:
    """Reading-first: the top level before `reading_top_until` of the phase, then the top level on
    `reading_top_share` of the steps and `reading_level` on the others (drawn per step, so a batch
    shares one token count)."""
    if step < phase.reading_top_until * phase.steps:
        return g.max_level_index
    top = np.random.default_rng([seed, step, 7]).random() < phase.reading_top_share
    return g.max_level_index if top else phase.reading_level


def reading_views(batch: dict, others: torch.Tensor, g, exponent: float, level: int, seed: int, step: int,
                  rank: int, world: int) -> torch.Tensor:
    """Levels (B, Hc, Wc) for a reading step. A detail sample with a region: its cells at `level`
    (below the top level, half the time the scene's other asked-about sign's too), every other cell
    at the minimum. Any
    other sample: the knapsack on its mixed utility at its budget (what phase 0 does otherwise)."""
    targets, utility = batch["target_cells"], batch["utility"]
    levels = []
    for k in range(len(batch["detail"])):
        b = rank + k * world  # the sample's index in the global batch
        t = np.nan_to_num(targets[k].cpu().numpy(), nan=0.0) > 0
        if bool(batch["detail"][k]) and t.any():
            # a second sign only below the top level: at the top a sign alone costs 64 tokens a cell,
            # and the batch pads to its longest sample
            if level < g.max_level_index and np.random.default_rng([seed, step, 8, b]).random() < 0.5:
                t |= np.nan_to_num(others[k].cpu().numpy(), nan=0.0) > 0
            levels.append(np.where(t, level, g.min_level))
        else:
            levels.append(solve_knapsack(utility[k].numpy(), g, batch["budgets"][k], exponent))
    return torch.from_numpy(np.stack(levels)).long()


def mixed_allocation(targets: torch.Tensor, g, seed: int, step: int, rank: int, world: int, global_batch: int,
                     detail: list[bool] | None = None, high_res_steps: float = 0.0, full_steps: float = 0.03):
    """Random budgets and utilities so the downstream learns to read any allocation.

    Gist samples: 45 % aimed at the target (oracle), 20 % random, 20 % uniform, 15 % random
    utilities over the target's neighbourhood, at budgets from gist-only to the accurate mode.
    Fine-detail samples are what the downstream must learn to *read*, so 70 % of them get the
    oracle at the budgets where a target cell reaches a readable level (uniform and accurate),
    and on `high_res_steps` of the steps their target at full resolution (the `full` policy's
    view); `full_steps` of the steps are full everywhere."""
    choices = [g.min_tokens, g.budget_for_mode("balanced"), g.uniform_budget, g.budget_for_mode("accurate")]
    detail = detail or [False] * len(targets)
    budgets, utils = [], []
    # full resolution is drawn per step, not per sample: one full sample would pad the whole batch
    # to max_tokens and cost ~10x the step time; likewise target-at-full steps
    full_step = np.random.default_rng([seed, step, 3]).random() < full_steps
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
