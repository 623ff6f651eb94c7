"""Evaluation on a dataset split: answers, where the budget went, and what it cost, per policy.

`evaluate()` runs the model batch by batch on cached SAM features and returns one row per
question; `summarize()` turns rows into the report's numbers (accuracy by difficulty and family,
target token share and lift, query dependence, accuracy by token bucket, misclassification rate,
tier by difficulty, latency percentiles). `run_eval()` is the `arrcoc-lab eval` command: it writes
metrics JSON, a table and figures under reports/.

Every answer is scored twice: `correct` is exact match (what `accuracy` means everywhere), `score`
is the dataset's official metric (`metrics.OFFICIAL_METRIC`: ANLS for DocVQA, relaxed accuracy for
ChartQA, VQA accuracy for TextVQA, exact match for the synthetic sets), named in the row's, the
summary's and the report's `metric`. Real VQA files (docvqa:/path.json, …) are encoded image by
image when loaded (no feature cache: the file, not a split seed, defines them).

`phrasing="heldout"` asks every question of the eval set in one of the held-out phrasings of
`data.phrasing` (words the model never saw in training); answers, boxes and ids are unchanged.

Under a launcher (torchrun, accelerate launch) `run_eval` shards the split by scene over the
processes and merges the rows on the main process (distributed.py); the metrics equal a one-process
run's. `evaluate` runs batches of questions through the model's one forward on cached SAM features,
the machinery `Pipeline.batch` uses on images: a row does not depend on its batch.
"""
from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import metrics as M
from ..modeling.allocator import stable_seed
from ..policies import get_policy
from ..checkpoint import atomic_write_text, write_jsonl
from ..data.features import encode_scenes
from ..errors import InputError
from ..inputs import to_model_input
from .distributed import SceneRange, Shard

log = logging.getLogger(__name__)

PHRASINGS = ("seen", "heldout")  # the datasets' own templates / data.phrasing.HELDOUT
PHRASING_SEED = 0  # which held-out phrasing each sample gets (per sample id, see rephrase_samples)


@dataclass
class EvalSet:
    samples: list  # arrcoc_lab.data.Sample (images are not kept: features hold what the model needs)
    scenes: object  # features.SceneTensors
    image_hw: tuple[int, int]
    spec: str
    phrasing: str = "seen"  # one of PHRASINGS
    positions: list[int] | None = None  # each sample's index in the whole split (a shard holds some); None: 0, 1, …

    def __post_init__(self):
        self.positions = list(range(len(self.samples))) if self.positions is None else list(self.positions)


def check_phrasing(phrasing: str) -> str:
    if phrasing not in PHRASINGS:
        raise InputError(f"unknown phrasing {phrasing!r}; accepted: {', '.join(PHRASINGS)}")
    return phrasing


def load_eval_set(model, spec: str = "scenebench:test", n_scenes: int = 100, cache_dir: str = "cache",
                  progress: bool = True, phrasing: str = "seen", shard: Shard | None = None) -> EvalSet:
    """The first `n_scenes` scenes of a synthetic split with cached SAM features, or the first
    `n_scenes` questions of a real VQA file (encoded here); `phrasing` "heldout" replaces every
    question by a held-out rephrasing (answers and boxes unchanged; synthetic sets only). With a
    `shard` of several processes, only this process's block of scenes (images) is loaded and encoded."""
    from ..data import REAL, SYNTHETIC, load_dataset

    check_phrasing(phrasing)
    shard = shard or Shard()
    g = model.geometry
    name = spec.split(":", 1)[0]
    if name in REAL:
        if phrasing != "seen":
            raise InputError(f"phrasing {phrasing!r} rephrases the synthetic sets' templates; {name} takes 'seen'")
        ds = load_dataset(spec, n=n_scenes, image_size=g.image_size)
        lo, hi = shard.block(len({e.scene_index for e in ds.entries}))  # images, numbered in order of appearance
        mine = [i for i, e in enumerate(ds.entries) if lo <= e.scene_index < hi]
        return _real_eval_set(model, (ds[i] for i in mine), spec, progress, positions=mine)
    per_scene = SYNTHETIC[name].QUESTIONS_PER_SCENE if name in SYNTHETIC else 1
    # synthetic sets need ≥ 32 patches per side: a smaller (test) model gets them resized, as in training
    render = max(g.image_size, 32 * g.patch_size) if name in SYNTHETIC else g.image_size
    ds = load_dataset(spec, n=n_scenes * per_scene, image_size=render, patch_size=g.patch_size)
    if not hasattr(ds, "num_scenes"):
        raise ValueError(f"evaluation on {spec!r} needs a synthetic dataset with scenes; real VQA files are "
                         "evaluated image by image with the pipeline")
    lo, hi = shard.block(ds.num_scenes)
    if hi == lo:  # more processes than scenes: nothing to do here
        return EvalSet([], None, (render, render), spec, phrasing)
    part = ds if (lo, hi) == (0, ds.num_scenes) else SceneRange(ds, lo, hi)
    scenes = encode_scenes(model, part, cache_dir, progress=progress)
    positions = range(len(ds)) if part is ds else part.positions
    scenes = scenes if part is ds else part.shift(scenes)
    samples = [ds[i] for i in positions]
    if phrasing == "heldout":
        from ..data.phrasing import rephrase_samples

        samples = rephrase_samples(samples, "heldout", seed=PHRASING_SEED)
    return EvalSet(samples, scenes, samples[0].image.shape[:2], spec, phrasing, positions)


@torch.no_grad()
def _real_eval_set(model, ds, spec: str, progress: bool, batch_size: int = 16, positions=None) -> EvalSet:
    """A real VQA file's questions (`positions`: their indices in the file) and one row of SAM
    features per image; the samples keep a 1×1 stand-in image (the model-size pixels are in `scenes`)."""
    from ..data.features import SceneTensors

    g = model.geometry
    device = next(model.sam.parameters()).device
    samples, pixels, scene_ids = [], [], {}
    for s in tqdm(ds, desc=f"images of {spec}", disable=not progress):
        if not s.answers:
            raise InputError(f"{s.id} of {spec} has no reference answers (a test split?); evaluation needs them")
        if s.scene_index not in scene_ids:
            scene_ids[s.scene_index] = len(scene_ids)
            pixels.append(to_model_input(s.image, g.image_size)[0].round().clamp(0, 255).to(torch.uint8))
        samples.append(replace(s, image=s.image[:1, :1].copy()))
    if not samples:  # more processes than images: nothing to do here
        return EvalSet([], None, (g.image_size, g.image_size), spec, positions=[])
    pix = torch.stack(pixels)
    feats = torch.cat([model.encode_image(pix[i:i + batch_size].to(device).float()).half().cpu()
                       for i in range(0, len(pix), batch_size)])
    return EvalSet(samples, SceneTensors(feats, pix, list(scene_ids), image_hw=(g.image_size, g.image_size)),
                   (g.image_size, g.image_size), spec, positions=positions)


@torch.no_grad()
def evaluate(model, es: EvalSet, policy: str, budget=None, batch_size: int = 32, progress: bool = True,
             max_new_tokens: int | None = None) -> list[dict]:
    p = get_policy(policy)
    budget = model.allocator.resolve_budget(p, budget)  # once per run: None is the policy's default
    g = model.geometry
    boxes = g.cell_boxes(*es.image_hw)
    min_cell = g.levels[g.min_level]
    rows = []
    device = next(model.relevance.parameters()).device
    for start in tqdm(range(0, len(es.samples), batch_size), desc=f"eval {policy}@{budget}", disable=not progress):
        chunk = es.samples[start:start + batch_size]
        idx = es.scenes.rows([s.scene_index for s in chunk])
        feats = es.scenes.features[idx].float().to(device)
        pixels = es.scenes.pixels[idx].float().to(device)
        qs = [s.question for s in chunk]
        out = model(pixels, qs, policy=p, budget=budget, features=feats, generate=True,
                    seeds=[stable_seed(s.id) for s in chunk], max_new_tokens=max_new_tokens)
        a = out.trace.allocation
        for i, s in enumerate(chunk):
            tpc = a.tokens_per_cell[i].cpu().numpy()
            refs, metric = s.answers or s.answer, M.official_metric(s.dataset)
            row = {"id": s.id, "dataset": s.dataset, "scene": s.scene_index, "family": s.family,
                   "difficulty": s.difficulty, "question": s.question, "answer": s.answer, "pred": out.answers[i],
                   "correct": M.exact_match(out.answers[i], refs),
                   "metric": metric, "score": M.answer_score(metric, out.answers[i], refs),
                   "num_tokens": int(tpc.sum()), "budget": int(a.budgets[i]), "tier": a.tiers[i],
                   "tokens_per_cell": tpc.tolist(), "target_box": list(s.target_box) if s.target_box else None}
            if s.target_box:
                ts = M.target_token_share(tpc, boxes, s.target_box, np.minimum(tpc, min_cell))  # token-level policies may leave a cell empty
                row.update(share=ts.share, area_share=ts.area_share, lift=ts.lift)
            rows.append(row)
        rows[-1]["timings"] = {k: v / len(chunk) for k, v in out.trace.timings.items()}  # per-sample, per batch
    return rows


def summarize(rows: list[dict], geometry, image_hw: tuple[int, int] | None = None) -> dict:
    """The report's numbers; `image_hw` is the size the rows' target boxes are in (default the model's)."""
    g = geometry
    acc = lambda rs: float(np.mean([r["correct"] for r in rs])) if rs else float("nan")
    by = lambda key: {k: acc(v) for k, v in _group(rows, key).items()}
    detail = [r for r in rows if r["difficulty"] == "detail"]
    gist = [r for r in rows if r["difficulty"] == "gist"]
    lifts = [r["lift"] for r in detail if "lift" in r and np.isfinite(r["lift"])]
    shares = [r["share"] for r in detail if "share" in r]
    boxes = g.cell_boxes(*image_hw) if image_hw else g.cell_boxes()
    qd = []
    for scene_rows in _group(detail, "scene").values():
        with_box = [r for r in scene_rows if r["target_box"]]
        if len(with_box) >= 2 and with_box[0]["target_box"] != with_box[1]["target_box"]:
            a, b = with_box[:2]
            ta, tb = np.array(a["tokens_per_cell"]), np.array(b["tokens_per_cell"])
            floor = np.minimum(np.minimum(ta, tb), g.levels[g.min_level])  # token-level policies may leave a cell empty
            qd.append(M.query_dependence(ta, tb, boxes, a["target_box"], b["target_box"], floor))
    edges = sorted({g.min_tokens, g.budget_for_mode("balanced"), g.uniform_budget, g.budget_for_mode("accurate"),
                    g.max_tokens + 1})
    threshold = g.hard_query_min_tokens
    tiers = defaultdict(lambda: defaultdict(int))
    for r in rows:
        if r.get("tier"):
            tiers[r["difficulty"]][r["tier"]] += 1
    timings = [r["timings"] for r in rows if "timings" in r]
    by_dataset = {d: _official(rs) for d, rs in _group(rows, "dataset").items()} if rows and "dataset" in rows[0] else {}
    return {
        "n": len(rows),
        **_official(rows), "by_dataset": by_dataset,  # the official metric (name, score) beside exact match
        "accuracy": acc(rows), "accuracy_gist": acc(gist), "accuracy_detail": acc(detail),
        "accuracy_by_family": by("family"),
        "avg_tokens": float(np.mean([r["num_tokens"] for r in rows])),
        "avg_tokens_gist": float(np.mean([r["num_tokens"] for r in gist])) if gist else float("nan"),
        "avg_tokens_detail": float(np.mean([r["num_tokens"] for r in detail])) if detail else float("nan"),
        "target_share_detail": float(np.mean(shares)) if shares else float("nan"),
        "target_lift_detail": float(np.mean(lifts)) if lifts else float("nan"),
        "query_dependence": M.query_dependence_rate(qd) if qd else {"rate": float("nan"), "n": 0},
        "accuracy_by_tokens": [b.__dict__ if hasattr(b, "__dict__") else b._asdict()
                               for b in M.accuracy_by_token_bucket([r["num_tokens"] for r in rows],
                                                                   [r["correct"] for r in rows], edges)],
        "misclassification_rate": M.misclassification_rate([r["num_tokens"] for r in rows],
                                                           [r["difficulty"] for r in rows], threshold),
        "misclassification_threshold": threshold,
        "tiers_by_difficulty": {k: dict(v) for k, v in tiers.items()},
        "latency": M.latency_percentiles(timings) if timings else {},
    }


def _official(rows: list[dict]) -> dict:
    """Metric name, mean official score and exact match of rows (a mix of metrics has no one score)."""
    names = sorted({r.get("metric", "exact_match") for r in rows})
    one = len(names) == 1
    return {"metric": names[0] if one else "mixed: " + ", ".join(names),
            "score": float(np.mean([r.get("score", r["correct"]) for r in rows])) if one else float("nan"),
            "exact_match": float(np.mean([r["correct"] for r in rows])) if rows else float("nan")}


def eval_table(report: dict) -> str:
    """The `eval` report as a markdown table: each policy's official metric and score beside exact match."""
    lines = [f"{report['data']} — budget {report.get('budget')}, phrasing {report.get('phrasing', 'seen')}", "",
             "| policy | metric | score | exact match | EM gist | EM detail | tokens | detail lift | query dependence |",
             "|---|---|---|---|---|---|---|---|---|"]
    for policy, s in report["policies"].items():
        lines.append(f"| {policy} | {s['metric']} | {s['score']:.3f} | {s['exact_match']:.3f} | {s['accuracy_gist']:.3f} | "
                     f"{s['accuracy_detail']:.3f} | {s['avg_tokens']:.1f} | {s['target_lift_detail']:.2f} | "
                     f"{s['query_dependence'].get('rate', float('nan')):.2f} |")
    return "\n".join(lines) + "\n"


def _group(rows, key):
    out = defaultdict(list)
    for r in rows:
        out[r[key]].append(r)
    return out


def run_eval(pipe, data: str, policies: list[str], budget, n_scenes: int, out_dir: str | Path,
             cache_dir: str = "cache", batch_size: int = 32, progress: bool = True,
             phrasing: str = "seen", shard: Shard | None = None) -> dict | None:
    """`arrcoc-lab eval`: every policy on one split at one budget → metrics.json, table.md, figures.
    `phrasing`: "seen" (the datasets' templates) or "heldout" (see load_eval_set). With a `shard` of
    several processes, each answers its own scenes and the main process merges, writes and returns
    the report (the others return None)."""
    from .viz_report import accuracy_by_bucket_figure, allocation_examples_figure

    check_phrasing(phrasing)
    shard = shard or Shard()
    model = pipe.model
    budget = model.allocator.resolve_budget(get_policy("arrcoc"), budget) if budget is not None else None
    es = load_eval_set(model, data, n_scenes, cache_dir, progress and shard.main, phrasing=phrasing, shard=shard)
    report = {"data": data, "metric": M.official_metric(data.split(":", 1)[0]), "n_scenes": n_scenes,
              "budget": budget, "phrasing": phrasing, "preset": pipe.config.preset, "weights": pipe.config.weights,
              "policies": {}}
    all_rows = {}
    for policy in policies:
        rows = shard.merge(es.positions, evaluate(model, es, policy, budget, batch_size, progress and shard.main))
        if shard.main:
            all_rows[policy] = rows
            report["policies"][policy] = summarize(rows, model.geometry, es.image_hw)
    images = shard.gather(scene_images(es))
    if not shard.main:
        return None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "metrics.json", json.dumps(report, indent=2, default=float))
    atomic_write_text(out_dir / "table.md", eval_table(report))
    atomic_write_text(out_dir / "config.json", json.dumps(pipe.config.to_dict(), indent=2))
    write_jsonl(out_dir / "rows.jsonl", ({"policy": policy, **r} for policy, rows in all_rows.items() for r in rows))
    accuracy_by_bucket_figure(report, out_dir / "accuracy_by_tokens.png")
    allocation_examples_figure({k: v for part in images for k, v in part.items()}, all_rows, model.geometry,
                               out_dir / "allocation_examples.png")
    return report


def scene_images(es: EvalSet, n: int = 3) -> dict[int, np.ndarray]:
    """The model-size images (H×W×3 uint8) of the first n scenes an eval set holds."""
    if es.scenes is None:
        return {}
    pix = es.scenes.pixels
    return {int(s): pix[es.scenes.rows([s])[0]].permute(1, 2, 0).numpy() for s in sorted(es.scenes.scene_ids)[:n]}
