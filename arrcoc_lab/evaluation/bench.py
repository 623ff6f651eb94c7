"""`arrcoc-lab bench` (issue 5): every allocation policy side by side at equal budgets on the same
weights — fixed compression (uniform), native resolution (full), the seeds' policies and the
token-pruning literature (baselines.py) — on SceneBench and DocSynth test splits.

The sweep uses the paper geometry's budgets 64, 100, 144, 256, 400 tokens (and full), scaled to the
preset by n_cells / 64 (lab: 16, 25, 36, 64, 100, full = 1024). For every (split, policy, budget)
it records accuracy (overall, gist, detail, by question family), tokens, FLOPs per stage counted
exactly on this preset (FlopCounterMode, a few questions), FLOPs per stage at the paper geometry
(paper_flops.py) and latency p50/p95 per stage. `run_bench` writes metrics.json, rows.jsonl,
report.md and the figures under reports/bench/<preset>/ (bench_report.py). Timings are reported,
never asserted; the issue's targets are reported with the margin by which each is met or missed.
Under a launcher (torchrun, accelerate launch) each process answers its block of scenes and the main
process merges the rows, counts FLOPs, times SAM and writes the report (distributed.py).
"""
from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import metrics as M
from ..modeling.allocator import stable_seed
from ..policies import POLICIES, get_policy
from ..checkpoint import atomic_write_text, load_weights, write_jsonl
from .distributed import Shard
from .evaluate import evaluate, load_eval_set, summarize
from ..modeling.trace import Trace

log = logging.getLogger(__name__)
PAPER_BUDGETS = (64, 100, 144, 256, 400)  # tokens in the paper geometry (64 cells); "full" is always added
PAPER_CELLS = 64
GIST_TOLERANCE = 0.02  # arrcoc may trail uniform/random by at most 2 points on gist questions


@dataclass
class BenchConfig:
    data: tuple[str, ...] = ("scenebench:test", "docsynth:test")  # splits, evaluated on cached SAM features
    n_scenes: int = 5  # scenes per split (6 questions each): small, for CPU
    paper_budgets: tuple[int, ...] = PAPER_BUDGETS  # paper-geometry budgets, scaled by n_cells / 64
    policies: tuple[str, ...] = ()  # () = every registered policy
    batch_size: int = 8  # questions per forward; latency is per question (batch time / batch size)
    flop_samples: int = 2  # questions per point whose FLOPs are counted exactly (this preset's geometry, first split)
    paper_flops: bool = True  # also count FLOPs per stage at the paper geometry (meta device, ~20 s)
    sam_runs: int = 3  # timed SAM runs (evaluation reads cached features, so SAM is timed apart)
    max_new_tokens: int | None = None  # answer length cap (None = the preset's)
    cache_dir: str = "cache"  # SAM feature cache
    progress: bool = True  # tqdm bars
    own_weights: dict[str, str] = field(default_factory=dict)  # policy → weights of a downstream trained for it; adds "<policy>/own" points


def scaled_budgets(geometry, paper_budgets=PAPER_BUDGETS) -> dict[int, int]:
    """Paper budget → this geometry's budget (× n_cells / 64, rounded, within [min, max])."""
    scale = geometry.n_cells / PAPER_CELLS
    return {int(b): int(min(max(round(b * scale), geometry.min_tokens), geometry.max_tokens)) for b in paper_budgets}


def sweep_points(policies, budgets: dict[int, int]) -> list[tuple[str, int | None, int | None]]:
    """(policy, budget, paper budget) to run: every budget per policy; `full` once (budget None)."""
    points = []
    for p in policies:
        get_policy(p)
        points += [(p, None, None)] if p == "full" else [(p, b, pb) for pb, b in budgets.items()]
    return points


@torch.no_grad()
def point_flops(model, es, policy: str, budget, n: int) -> dict[str, float]:
    """FLOPs per stage per question, counted exactly on the first n questions (prefill + one token)."""
    chunk = es.samples[:n]
    idx = es.scenes.rows([s.scene_index for s in chunk])
    device = next(model.relevance.parameters()).device
    p = get_policy(policy)
    out = model(es.scenes.pixels[idx].float().to(device), [s.question for s in chunk], policy=p,
                budget=model.allocator.resolve_budget(p, budget),
                features=es.scenes.features[idx].float().to(device), seeds=[stable_seed(s.id) for s in chunk],
                max_new_tokens=1, count_flops=True)
    return {k: v / len(chunk) for k, v in out.trace.flops.items()}


@torch.no_grad()
def time_sam(model, pixels: torch.Tensor, runs: int, warmup: int = 0) -> tuple[torch.Tensor, dict]:
    """SAM features of `pixels` and their latency percentiles over `runs` timed runs after `warmup`
    untimed ones (timed as a Trace stage, so the GPU is synchronised around it)."""
    times = []
    for i in range(warmup + max(runs, 1)):
        tr = Trace(probes=False, sync=pixels.is_cuda)
        with tr.stage("sam"):
            features = model.encode_image(pixels)
        if i >= warmup:
            times.append(tr.timings)
    return features, M.latency_percentiles(times)["sam"]


@torch.no_grad()
def sam_cost(model, es, runs: int) -> tuple[int, dict]:
    """SAM on one image: exact FLOPs and latency percentiles over `runs` timed runs."""
    device = next(model.sam.parameters()).device
    pixels = es.scenes.pixels[:1].float().to(device)
    counter = M.total_flop_counter()
    with M.countable_kernels(), counter:
        model.encode_image(pixels)
    return int(counter.get_total_flops()), time_sam(model, pixels, runs)[1]


def point_summary(rows: list[dict], geometry, flops: dict, sam_flops: int, sam_latency: dict,
                  image_hw: tuple[int, int] | None = None) -> dict:
    """`image_hw`: the size the rows' target boxes are in (the eval set's; default the model's input)."""
    s = summarize(rows, geometry, image_hw)
    timings = [r["timings"] for r in rows if "timings" in r]
    totals = [{"total": sum(v for k, v in t.items() if k != "sam")} for t in timings]
    stages = {**flops, "sam": float(sam_flops)}
    return {"n": s["n"], "tokens": s["avg_tokens"], "accuracy": s["accuracy"], "accuracy_gist": s["accuracy_gist"],
            "accuracy_detail": s["accuracy_detail"], "accuracy_by_family": s["accuracy_by_family"],
            "target_lift_detail": s["target_lift_detail"], "query_dependence": s["query_dependence"],
            "latency": {**s["latency"], "sam": sam_latency},
            "latency_total": M.latency_percentiles(totals)["total"] if totals else {},
            "flops": stages, "gflops": sum(stages.values()) / 1e9}


def accuracy_targets(results: dict, tolerance: float = GIST_TOLERANCE) -> dict:
    """arrcoc vs uniform and random at every budget below full: above on detail questions (margin =
    difference, met if > 0), within `tolerance` on gist (margin = difference + tolerance, met if ≥ 0).
    Per split; policies missing from the sweep are skipped."""
    out = {}
    for split, pts in results.items():
        by = {(p["policy"], p["label"]): p for p in pts}
        rows = []
        for (policy, label), a in sorted(by.items(), key=lambda kv: kv[1]["budget"] or 0):
            if policy != "arrcoc" or label == "full":
                continue
            row = {"budget": a["budget"], "paper_budget": a["paper_budget"]}
            for other in ("uniform", "random"):
                if (other, label) not in by:
                    continue
                o = by[(other, label)]
                row[f"detail_vs_{other}"] = a["accuracy_detail"] - o["accuracy_detail"]
                row[f"gist_vs_{other}"] = a["accuracy_gist"] - o["accuracy_gist"] + tolerance
            margins = {k: m for k, m in row.items() if k.startswith(("detail_vs", "gist_vs"))}
            row["met"] = bool(margins) and all(m > 0 if k.startswith("detail") else m >= 0 for k, m in margins.items())
            rows.append(row)
        out[split] = rows
    return out


def own_models(model, own_weights: dict[str, str]) -> dict:
    """policy → a copy of `model` carrying that policy's own trained weights (same architecture)."""
    out = {}
    for policy, path in own_weights.items():
        get_policy(policy)  # unknown names fail loudly, listing the registry
        net = copy.deepcopy(model)
        load_weights(net, path)
        out[policy] = net.eval()
    return out


def run_bench(pipe, cfg: BenchConfig, out_dir: str | Path, paper_stages: dict | None = None,
              shard: Shard | None = None) -> dict | None:
    """The whole benchmark → metrics.json, rows.jsonl, report.md and figures in out_dir.
    `paper_stages`: a count_paper_stages() result to reuse (else counted when cfg.paper_flops).
    With a `shard` of several processes, the main process returns the report, the others None."""
    from . import bench_report
    from . import paper_flops as PF

    shard = shard or Shard()
    model, g = pipe.model, pipe.geometry
    policies = list(cfg.policies) or sorted(POLICIES)
    budgets = scaled_budgets(g, cfg.paper_budgets)
    points = sweep_points(policies, budgets)
    out_dir = Path(out_dir)
    pf = paper_stages
    if pf is None and cfg.paper_flops and shard.main:
        pf = PF.count_paper_stages(list(cfg.paper_budgets), query_encoder=model.query_encoder)
    own = own_models(model, cfg.own_weights)
    # (name, network, policy, budget, paper budget): the shared downstream, then each own one
    runs = [(p, model, p, b, pb) for p, b, pb in points]
    runs += [(f"{p}/own", own[p], p, b, pb) for p, b, pb in sweep_points(list(own), budgets)]
    results, all_rows, flops = {}, [], {}
    bar = tqdm(total=len(runs) * len(cfg.data), desc="bench", disable=not (cfg.progress and shard.main))
    for spec in cfg.data:
        es = load_eval_set(model, spec, cfg.n_scenes, cfg.cache_dir, progress=cfg.progress and shard.main, shard=shard)
        if shard.main:  # SAM is timed apart, on the split's first image
            sam_flops, sam_latency = sam_cost(model, es, cfg.sam_runs)
        results[spec] = []
        for name, net, policy, budget, paper_budget in runs:
            bar.set_postfix_str(f"{spec} {name}@{budget or 'full'}")
            rows = shard.merge(es.positions, evaluate(net, es, policy, budget, cfg.batch_size, progress=False,
                                                      max_new_tokens=cfg.max_new_tokens))
            if not shard.main:
                continue
            if (policy, budget) not in flops:  # counted on the first split's first questions: shapes barely vary
                flops[policy, budget] = point_flops(model, es, policy, budget, cfg.flop_samples)
            point = point_summary(rows, g, flops[policy, budget], sam_flops, sam_latency, es.image_hw)
            point.update(policy=name, budget=budget, paper_budget=paper_budget,
                         label="full" if budget is None else str(budget))
            if pf is not None:
                paper = PF.policy_flops(pf, policy, paper_budget)
                point.update(paper_flops=paper, paper_gflops=sum(paper.values()) / 1e9)
            results[spec].append(point)
            all_rows += [{"data": spec, "policy": name, "budget": budget, **r} for r in rows]
            bar.update(1)
    bar.close()
    if not shard.main:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {"preset": pipe.config.preset, "weights": pipe.config.weights, "config": asdict(cfg),
              "budgets": {str(k): v for k, v in budgets.items()}, "full_tokens": g.max_tokens, "policies": policies,
              "cites": {p: get_policy(p).cite for p in policies}, "results": results,
              "own_weights": dict(cfg.own_weights), "targets": {"accuracy": accuracy_targets(results)},
              "torch": torch.__version__,
              "device": str(next(model.parameters()).device), "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    if pf is not None:
        report["paper_flops"] = pf
        report["targets"].update(PF.targets(pf))
        report["paper_notes"] = PF.explain(pf)
    atomic_write_text(out_dir / "metrics.json", json.dumps(report, indent=1, default=_json_default))
    write_jsonl(out_dir / "rows.jsonl", all_rows, default=_json_default)
    bench_report.write_figures(report, out_dir)
    atomic_write_text(out_dir / "report.md", bench_report.render_markdown(report))
    log.info("benchmark report written to %s", out_dir)
    return report


def _json_default(x):
    if isinstance(x, (np.integer, np.floating)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return float(x)
